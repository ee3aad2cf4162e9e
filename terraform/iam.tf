data "aws_iam_policy_document" "ecs_tasks_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [data.aws_caller_identity.current.account_id]
    }
  }
}

# What principald itself may do, and nothing more. tests/terraform.rs checks that the DynamoDB and KMS actions here are
# exactly the calls the code makes while serving (table creation and key creation are `migrate` / `bootstrap` work
# that Terraform does instead). TransactWriteItems has no IAM action of its own: it is authorized through the
# PutItem, UpdateItem and ConditionCheckItem of its items.
resource "aws_iam_role" "task" {
  name               = "${var.name}-task"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
  tags               = var.tags
}

locals {
  tables = [aws_dynamodb_table.principals.arn, aws_dynamodb_table.certificates.arn, aws_dynamodb_table.meta.arn]
}

data "aws_iam_policy_document" "task" {
  statement {
    sid = "Tables"
    actions = [
      "dynamodb:ConditionCheckItem",
      "dynamodb:DescribeTable",
      "dynamodb:GetItem",
      "dynamodb:PutItem",
      "dynamodb:UpdateItem",
    ]
    resources = local.tables
  }

  # Scans: the small meta table (intermediates, token keys, chain heads) and, for revoking an intermediate, the
  # certificates it signed.
  statement {
    sid       = "ScanMetaAndCertificates"
    actions   = ["dynamodb:Scan"]
    resources = [aws_dynamodb_table.meta.arn, aws_dynamodb_table.certificates.arn]
  }

  # The only deletion the service makes: records of intermediates past retention.
  statement {
    sid       = "ForgetExpiredIntermediates"
    actions   = ["dynamodb:DeleteItem"]
    resources = [aws_dynamodb_table.meta.arn]
    condition {
      test     = "ForAllValues:StringLike"
      variable = "dynamodb:LeadingKeys"
      values   = ["intermediate#*"]
    }
  }

  statement {
    sid       = "Indexes"
    actions   = ["dynamodb:Query"]
    resources = [for table in local.tables : "${table}/index/*"]
  }

  # No UpdateItem or DeleteItem on audit events. PutItem cannot be limited to new items (IAM cannot require a condition
  # expression), so whoever holds this role can still replace an event, and it updates the chain heads in meta: the
  # signed checkpoints outside the store (--audit-checkpoints) are what catch a rewrite (README, "Audit log").
  statement {
    sid       = "AuditLogAppendAndRead"
    actions   = ["dynamodb:PutItem", "dynamodb:Query", "dynamodb:DescribeTable"]
    resources = [aws_dynamodb_table.audit.arn, "${aws_dynamodb_table.audit.arn}/index/*"]
  }

  statement {
    sid       = "SignWithTheCaKey"
    actions   = ["kms:Sign"]
    resources = [aws_kms_key.ca.arn]
    condition {
      test     = "StringEquals"
      variable = "kms:SigningAlgorithm"
      values   = ["ECDSA_SHA_256"]
    }
    condition {
      test     = "StringEquals"
      variable = "kms:MessageType"
      values   = ["RAW", "DIGEST"]
    }
  }

  statement {
    sid       = "ReadTheCaKey"
    actions   = ["kms:DescribeKey", "kms:GetPublicKey"]
    resources = [aws_kms_key.ca.arn]
  }

  # GenerateMac with the derivation key is the right to sign as any replica intermediate (their keys are derived
  # from it): this key only, this algorithm only.
  statement {
    sid       = "DeriveWithTheCaDerivationKey"
    actions   = ["kms:GenerateMac"]
    resources = [aws_kms_key.ca_derive.arn]
    condition {
      test     = "StringEquals"
      variable = "kms:MacAlgorithm"
      values   = ["HMAC_SHA_256"]
    }
  }

  statement {
    sid       = "ReadTheCaDerivationKey"
    actions   = ["kms:DescribeKey"]
    resources = [aws_kms_key.ca_derive.arn]
  }
}

resource "aws_iam_role_policy" "task" {
  name   = "principald"
  role   = aws_iam_role.task.id
  policy = data.aws_iam_policy_document.task.json
}

# What ECS needs to start the task: pull the image, write logs, read the configured secrets.
resource "aws_iam_role" "execution" {
  name               = "${var.name}-execution"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
  tags               = var.tags
}

resource "aws_iam_role_policy_attachment" "execution" {
  role       = aws_iam_role.execution.name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"
}

data "aws_iam_policy_document" "execution_secrets" {
  statement {
    sid       = "ReadConfiguredSecrets"
    actions   = ["ssm:GetParameters", "secretsmanager:GetSecretValue"]
    resources = length(var.secrets) > 0 ? values(var.secrets) : ["arn:${data.aws_partition.current.partition}:ssm:${data.aws_region.current.name}:${data.aws_caller_identity.current.account_id}:parameter/${var.name}/*"]
  }
}

resource "aws_iam_role_policy" "execution_secrets" {
  name   = "secrets"
  role   = aws_iam_role.execution.id
  policy = data.aws_iam_policy_document.execution_secrets.json
}
