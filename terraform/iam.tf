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

# What principald itself may do, and nothing more, and only through the VPC's endpoints (endpoints.tf).
# tests/checks/terraform.rs checks that the DynamoDB, KMS and S3 actions here are exactly the calls the code makes while serving (table creation and key creation are `migrate` / `bootstrap` work
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
    condition {
      test     = "StringEquals"
      variable = local.vpc_condition_key
      values   = local.dynamodb_source
    }
  }

  # Scans: the small meta table (intermediates, token keys, chain heads) and, for revoking an intermediate, the
  # certificates it signed.
  statement {
    sid       = "ScanMetaAndCertificates"
    actions   = ["dynamodb:Scan"]
    resources = [aws_dynamodb_table.meta.arn, aws_dynamodb_table.certificates.arn]
    condition {
      test     = "StringEquals"
      variable = local.vpc_condition_key
      values   = local.dynamodb_source
    }
  }

  # Deletions in meta: records of intermediates and token keys past retention.
  statement {
    sid       = "ForgetExpiredRecords"
    actions   = ["dynamodb:DeleteItem"]
    resources = [aws_dynamodb_table.meta.arn]
    condition {
      test     = "ForAllValues:StringLike"
      variable = "dynamodb:LeadingKeys"
      values   = ["intermediate#*", "token_key#*"]
    }
    condition {
      test     = "StringEquals"
      variable = local.vpc_condition_key
      values   = local.dynamodb_source
    }
  }

  # Deleting a workload entry removes its item from the principals table; principals themselves are never deleted.
  statement {
    sid       = "DeleteWorkloadEntries"
    actions   = ["dynamodb:DeleteItem"]
    resources = [aws_dynamodb_table.principals.arn]
    condition {
      test     = "ForAllValues:StringLike"
      variable = "dynamodb:LeadingKeys"
      values   = ["workload#*"]
    }
    condition {
      test     = "StringEquals"
      variable = local.vpc_condition_key
      values   = local.dynamodb_source
    }
  }

  statement {
    sid       = "Indexes"
    actions   = ["dynamodb:Query"]
    resources = [for table in local.tables : "${table}/index/*"]
    condition {
      test     = "StringEquals"
      variable = local.vpc_condition_key
      values   = local.dynamodb_source
    }
  }

  # No UpdateItem or DeleteItem on audit events. PutItem cannot be limited to new items (IAM cannot require a condition
  # expression), so whoever holds this role can still replace an event, and it updates the chain heads in meta: the
  # signed checkpoints outside the store (--audit-checkpoints) are what catch a rewrite (README, "Audit log").
  statement {
    sid       = "AuditLogAppendAndRead"
    actions   = ["dynamodb:PutItem", "dynamodb:Query", "dynamodb:DescribeTable"]
    resources = [aws_dynamodb_table.audit.arn, "${aws_dynamodb_table.audit.arn}/index/*"]
    condition {
      test     = "StringEquals"
      variable = local.vpc_condition_key
      values   = local.dynamodb_source
    }
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
    condition {
      test     = "StringEquals"
      variable = local.vpc_condition_key
      values   = local.kms_source
    }
  }

  statement {
    sid       = "ReadTheCaKey"
    actions   = ["kms:DescribeKey", "kms:GetPublicKey"]
    resources = [aws_kms_key.ca.arn]
    condition {
      test     = "StringEquals"
      variable = local.vpc_condition_key
      values   = local.kms_source
    }
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
    condition {
      test     = "StringEquals"
      variable = local.vpc_condition_key
      values   = local.kms_source
    }
  }

  statement {
    sid       = "ReadTheCaDerivationKey"
    actions   = ["kms:DescribeKey"]
    resources = [aws_kms_key.ca_derive.arn]
    condition {
      test     = "StringEquals"
      variable = local.vpc_condition_key
      values   = local.kms_source
    }
  }

  # Audit checkpoints (checkpoints.tf; the code: src/server/checkpoints_s3.rs): new objects under the prefix, nothing
  # else on S3. The bucket's default Object Lock retention applies to each, so a replica can neither shorten it nor
  # delete or overwrite a checkpoint version (COMPLIANCE mode).
  statement {
    sid       = "WriteAuditCheckpoints"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.checkpoints.arn}/${var.audit_checkpoints_prefix}*"]
    condition {
      test     = "StringEquals"
      variable = local.vpc_condition_key
      values   = local.s3_source
    }
  }

  # The CA key policies grant the task role kms:Sign and kms:GenerateMac themselves, without this policy, so the
  # conditions above alone would not tie those to the VPC: an explicit deny does, whatever else allows. Requests AWS
  # services make on the role's behalf (aws:ViaAWSService) carry no endpoint and are left alone.
  statement {
    sid       = "NothingFromOutsideTheVpc"
    effect    = "Deny"
    actions   = ["dynamodb:*", "kms:*", "s3:*"]
    resources = ["*"]
    condition {
      test     = "StringNotEquals"
      variable = local.vpc_condition_key
      values   = local.vpc_sources
    }
    condition {
      test     = "BoolIfExists"
      variable = "aws:ViaAWSService"
      values   = ["false"]
    }
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

# Read-only access for resource servers (AuthLayer, TokenVerifier read principals, certificates, intermediates and
# token keys) and auditors (`principalctl audit verify` reads the audit log, its chain heads and the signed
# checkpoints): reads of the tables and the checkpoints, the CA's public key, and no write anywhere. The one Scan is
# the meta table's, where the code finds token keys, intermediates and chain heads. Created when reader_principals
# names who may assume it; the CA key policy lets this role (and no other reader) call GetPublicKey.
data "aws_iam_policy_document" "reader_assume" {
  count = length(var.reader_principals) > 0 ? 1 : 0
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "AWS"
      identifiers = var.reader_principals
    }
  }
}

resource "aws_iam_role" "reader" {
  count              = length(var.reader_principals) > 0 ? 1 : 0
  name               = "${var.name}-reader"
  assume_role_policy = data.aws_iam_policy_document.reader_assume[0].json
  tags               = var.tags
}

data "aws_iam_policy_document" "reader" {
  statement {
    sid       = "ReadTheTables"
    actions   = ["dynamodb:DescribeTable", "dynamodb:GetItem", "dynamodb:Query"]
    resources = concat(local.tables, [aws_dynamodb_table.audit.arn])
  }

  statement {
    sid       = "QueryTheIndexes"
    actions   = ["dynamodb:Query"]
    resources = [for table in concat(local.tables, [aws_dynamodb_table.audit.arn]) : "${table}/index/*"]
  }

  statement {
    sid       = "ScanMeta"
    actions   = ["dynamodb:Scan"]
    resources = [aws_dynamodb_table.meta.arn]
  }

  statement {
    sid       = "ReadTheCaPublicKey"
    actions   = ["kms:GetPublicKey"]
    resources = [aws_kms_key.ca.arn]
  }

  statement {
    sid       = "ReadAuditCheckpoints"
    actions   = ["s3:GetObject"]
    resources = ["${aws_s3_bucket.checkpoints.arn}/*"]
  }

  statement {
    sid       = "ListAuditCheckpoints"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.checkpoints.arn]
  }
}

resource "aws_iam_role_policy" "reader" {
  count  = length(var.reader_principals) > 0 ? 1 : 0
  name   = "principald-read-only"
  role   = aws_iam_role.reader[0].id
  policy = data.aws_iam_policy_document.reader.json
}
