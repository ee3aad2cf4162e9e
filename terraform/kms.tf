data "aws_caller_identity" "current" {}
data "aws_region" "current" {}
data "aws_partition" "current" {}

locals {
  account_root   = "arn:${data.aws_partition.current.partition}:iam::${data.aws_caller_identity.current.account_id}:root"
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
  #checkov:skip=CKV_AWS_109:in a key policy, resources "*" means this key and nothing else; administration is limited to ca_key_administrators, policy changes to ca_key_policy_administrators, and explicit denies keep everyone else from using the key, changing its policy or granting its use
  statement {
    sid = "Administer"
    # Everything but using the key, granting its use and changing who may.
    actions   = ["kms:Describe*", "kms:Enable*", "kms:List*", "kms:Update*", "kms:Revoke*", "kms:Disable*", "kms:Get*", "kms:Delete*", "kms:TagResource", "kms:UntagResource", "kms:ScheduleKeyDeletion", "kms:CancelKeyDeletion"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = var.ca_key_administrators
    }
  }

  statement {
    sid       = "ChangeThePolicy"
    actions   = ["kms:PutKeyPolicy", "kms:GetKeyPolicy"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = var.ca_key_policy_administrators
    }
  }

  # Explicit denies win over any IAM policy in the account (kms:* on * included).
  statement {
    sid       = "NobodyElseUsesTheKey"
    effect    = "Deny"
    actions   = ["kms:Sign"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["*"]
    }
    condition {
      test     = "ArnNotEquals"
      variable = "aws:PrincipalArn"
      values   = concat([aws_iam_role.task.arn], var.ca_key_signers)
    }
  }

  statement {
    sid       = "NobodyElseChangesThePolicy"
    effect    = "Deny"
    actions   = ["kms:PutKeyPolicy"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["*"]
    }
    condition {
      test     = "ArnNotEquals"
      variable = "aws:PrincipalArn"
      values   = var.ca_key_policy_administrators
    }
  }

  statement {
    sid       = "NoGrants"
    effect    = "Deny"
    actions   = ["kms:CreateGrant"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["*"]
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
      values   = ["RAW", "DIGEST"]
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

  # The read-only role (iam.tf), when there is one: the public key, nothing else.
  dynamic "statement" {
    for_each = aws_iam_role.reader
    content {
      sid       = "ReadersReadThePublicKey"
      actions   = ["kms:GetPublicKey"]
      resources = ["*"]
      principals {
        type        = "AWS"
        identifiers = [statement.value.arn]
      }
    }
  }
}

# The CA's derivation secret: an HMAC key beside the root. Each replica intermediate's private key is derived from
# GenerateMac (HMAC_SHA_256) over the intermediate's serial, so any replica can re-derive it and sign that
# intermediate's CRLs and OCSP answers after the replica that made it died, and no intermediate key is ever stored.
# The right to GenerateMac with this key is therefore the right to sign as any intermediate: it is guarded like
# kms:Sign on the root (one algorithm, named principals) and granted to the replicas' task role only, since
# ca_key_signers run bootstrap, which never derives. Its alias is the CA alias plus "-derive", the name
# principald looks for (src/pki/signer/awskms.rs, companion_alias). KMS does not rotate HMAC keys, and replacing this
# one changes every intermediate's key, so it is replaced only together with the root.
resource "aws_kms_key" "ca_derive" {
  #checkov:skip=CKV_AWS_7:KMS cannot rotate HMAC keys, and must not: a rotated MAC key would change every intermediate's derived key
  description              = "${var.name} CA derivation secret (replica intermediates' keys)"
  key_usage                = "GENERATE_VERIFY_MAC"
  customer_master_key_spec = "HMAC_256"
  deletion_window_in_days  = var.ca_key_deletion_window_days
  policy                   = data.aws_iam_policy_document.ca_derive_key.json
  tags                     = var.tags
}

resource "aws_kms_alias" "ca_derive" {
  name          = "${aws_kms_alias.ca.name}-derive"
  target_key_id = aws_kms_key.ca_derive.key_id
}

data "aws_iam_policy_document" "ca_derive_key" {
  #checkov:skip=CKV_AWS_111:in a key policy, resources "*" means this key and nothing else
  #checkov:skip=CKV_AWS_356:in a key policy, resources "*" means this key and nothing else
  #checkov:skip=CKV_AWS_109:in a key policy, resources "*" means this key and nothing else; administration is limited to ca_key_administrators, policy changes to ca_key_policy_administrators, and explicit denies keep everyone else from using the key, changing its policy or granting its use
  statement {
    sid = "Administer"
    # Everything but using the key, granting its use and changing who may.
    actions   = ["kms:Describe*", "kms:Enable*", "kms:List*", "kms:Update*", "kms:Revoke*", "kms:Disable*", "kms:Get*", "kms:Delete*", "kms:TagResource", "kms:UntagResource", "kms:ScheduleKeyDeletion", "kms:CancelKeyDeletion"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = var.ca_key_administrators
    }
  }

  statement {
    sid       = "ChangeThePolicy"
    actions   = ["kms:PutKeyPolicy", "kms:GetKeyPolicy"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = var.ca_key_policy_administrators
    }
  }

  # Explicit denies win over any IAM policy in the account (kms:* on * included).
  statement {
    sid       = "NobodyElseUsesTheKey"
    effect    = "Deny"
    actions   = ["kms:GenerateMac"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["*"]
    }
    condition {
      test     = "ArnNotEquals"
      variable = "aws:PrincipalArn"
      values   = [aws_iam_role.task.arn]
    }
  }

  statement {
    sid       = "NobodyElseChangesThePolicy"
    effect    = "Deny"
    actions   = ["kms:PutKeyPolicy"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["*"]
    }
    condition {
      test     = "ArnNotEquals"
      variable = "aws:PrincipalArn"
      values   = var.ca_key_policy_administrators
    }
  }

  statement {
    sid       = "NoGrants"
    effect    = "Deny"
    actions   = ["kms:CreateGrant"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["*"]
    }
  }

  # Signing as any intermediate: the replicas only (bootstrap, run with ca_key_signers, never derives).
  statement {
    sid       = "ReplicasDeriveIntermediateKeys"
    actions   = ["kms:GenerateMac"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = [aws_iam_role.task.arn]
    }
    condition {
      test     = "StringEquals"
      variable = "kms:MacAlgorithm"
      values   = ["HMAC_SHA_256"]
    }
  }

  # Replicas and bootstrap (which adopts this key rather than creating one) look it up by its alias.
  statement {
    sid       = "ReplicasDescribeTheKey"
    actions   = ["kms:DescribeKey"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = concat([aws_iam_role.task.arn], var.ca_key_signers)
    }
  }
}

# Encrypts the tables, the logs and the alarm topic at rest (a customer-managed key, rotated yearly).
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
  #checkov:skip=CKV_AWS_109:in a key policy, resources "*" means this key and nothing else; administration is limited to ca_key_administrators and ca_key_policy_administrators
  statement {
    sid       = "Administer"
    actions   = ["kms:*"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = concat(var.ca_key_administrators, var.ca_key_policy_administrators)
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

  # The alarm topic (alarms.tf) is encrypted with this key: CloudWatch alarms publish to it (the statement the SNS
  # documentation gives for CloudWatch and encrypted topics).
  statement {
    sid       = "CloudWatchAlarms"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey*"]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["cloudwatch.amazonaws.com"]
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
