data "aws_caller_identity" "current" {}
data "aws_region" "current" {}
data "aws_partition" "current" {}

locals {
  account_root   = "arn:${data.aws_partition.current.partition}:iam::${data.aws_caller_identity.current.account_id}:root"
  key_admins     = length(var.ca_key_administrators) > 0 ? var.ca_key_administrators : [local.account_root]
  ca_key_uri     = "awskms:${aws_kms_alias.ca.arn}"
  logs_principal = "logs.${data.aws_region.current.name}.amazonaws.com"
}

# The CA root key. Its private half never leaves KMS: principald asks for its public key and, a few times a day per
# replica, for a signature over a replica intermediate. Asymmetric keys cannot be rotated by KMS; rotating the root
# is an operator procedure (README, "Rotating the root").
resource "aws_kms_key" "ca" {
  description              = "${var.name} CA root key"
  key_usage                = "SIGN_VERIFY"
  customer_master_key_spec = "ECC_NIST_P256"
  deletion_window_in_days  = var.ca_key_deletion_window_days
  policy                   = data.aws_iam_policy_document.ca_key.json
  tags                     = var.tags
}

resource "aws_kms_alias" "ca" {
  name          = "alias/${var.name}-ca"
  target_key_id = aws_kms_key.ca.key_id
}

data "aws_iam_policy_document" "ca_key" {
  #checkov:skip=CKV_AWS_111:in a key policy, resources "*" means this key and nothing else
  #checkov:skip=CKV_AWS_356:in a key policy, resources "*" means this key and nothing else
  #checkov:skip=CKV_AWS_109:in a key policy, resources "*" means this key and nothing else; administration is limited to ca_key_administrators
  statement {
    sid       = "Administer"
    actions   = ["kms:Create*", "kms:Describe*", "kms:Enable*", "kms:List*", "kms:Put*", "kms:Update*", "kms:Revoke*", "kms:Disable*", "kms:Get*", "kms:Delete*", "kms:TagResource", "kms:UntagResource", "kms:ScheduleKeyDeletion", "kms:CancelKeyDeletion"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = local.key_admins
    }
  }

  statement {
    sid       = "ReplicasSignRawSha256"
    actions   = ["kms:Sign"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = concat([aws_iam_role.task.arn], var.ca_key_signers)
    }
    condition {
      test     = "StringEquals"
      variable = "kms:SigningAlgorithm"
      values   = ["ECDSA_SHA_256"]
    }
    condition {
      test     = "StringEquals"
      variable = "kms:MessageType"
      values   = ["RAW"]
    }
  }

  statement {
    sid       = "ReplicasReadThePublicKey"
    actions   = ["kms:GetPublicKey", "kms:DescribeKey"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = concat([aws_iam_role.task.arn], var.ca_key_signers)
    }
  }
}

# Encrypts the tables and the logs at rest (a customer-managed key, rotated yearly).
resource "aws_kms_key" "data" {
  description             = "${var.name} tables and logs"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.data_key.json
  tags                    = var.tags
}

resource "aws_kms_alias" "data" {
  name          = "alias/${var.name}-data"
  target_key_id = aws_kms_key.data.key_id
}

data "aws_iam_policy_document" "data_key" {
  #checkov:skip=CKV_AWS_111:in a key policy, resources "*" means this key and nothing else
  #checkov:skip=CKV_AWS_356:in a key policy, resources "*" means this key and nothing else
  #checkov:skip=CKV_AWS_109:in a key policy, resources "*" means this key and nothing else; administration is limited to ca_key_administrators
  statement {
    sid       = "Administer"
    actions   = ["kms:*"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = local.key_admins
    }
  }

  statement {
    sid       = "DynamoDBOnBehalfOfTheAccount"
    actions   = ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:DescribeKey", "kms:CreateGrant"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = [local.account_root]
    }
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["dynamodb.${data.aws_region.current.name}.amazonaws.com"]
    }
  }

  statement {
    sid       = "CloudWatchLogs"
    actions   = ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:DescribeKey"]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = [local.logs_principal]
    }
    condition {
      test     = "ArnLike"
      variable = "kms:EncryptionContext:aws:logs:arn"
      values   = ["arn:${data.aws_partition.current.partition}:logs:${data.aws_region.current.name}:${data.aws_caller_identity.current.account_id}:log-group:/ecs/${var.name}"]
    }
  }
}
