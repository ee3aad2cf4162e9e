# Signed audit checkpoints (README, "Audit log"): every minute the audit chains moved, each replica writes its chain
# heads, signed by the CA root, to this bucket (PRINCIPALD_AUDIT_CHECKPOINTS=s3://BUCKET/PREFIX, ecs.tf). Object Lock
# in COMPLIANCE mode keeps every version for audit_checkpoint_retention_days: nobody, the account root included, can
# delete or overwrite one before that, nor shorten its retention, so a rewrite of the audit table (which the task
# role's PutItem allows) is caught by `principalctl audit verify` against checkpoints written before it.
#
# The task role may only PutObject under the prefix (iam.tf); the read-only role may GetObject and ListBucket. Deleting
# the bucket (terraform destroy) fails until the last version's retention has ended: that is the point.

locals {
  checkpoints_bucket = var.audit_checkpoints_bucket != "" ? var.audit_checkpoints_bucket : "${var.name}-checkpoints-${data.aws_caller_identity.current.account_id}"
  audit_checkpoints  = "s3://${aws_s3_bucket.checkpoints.bucket}/${var.audit_checkpoints_prefix}"
}

resource "aws_s3_bucket" "checkpoints" {
  #checkov:skip=CKV_AWS_18:the bucket's writes are the replicas' own (PutObject, logged by CloudTrail) and its reads an auditor's; server access logs would need a second bucket
  #checkov:skip=CKV_AWS_144:one region; the checkpoints are a witness beside the DynamoDB tables (which have point-in-time recovery), and losing the region loses both. Replicate it with your own rule if you need a witness elsewhere
  #checkov:skip=CKV2_AWS_62:nothing reacts to new checkpoints; auditors read them with `principalctl audit verify`
  #checkov:skip=CKV_AWS_145:SSE-S3 on purpose (aws_s3_bucket_server_side_encryption_configuration below): checkpoints are signed chain heads, not secrets
  bucket              = local.checkpoints_bucket
  object_lock_enabled = true
  tags                = var.tags
}

resource "aws_s3_bucket_versioning" "checkpoints" {
  bucket = aws_s3_bucket.checkpoints.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_object_lock_configuration" "checkpoints" {
  bucket = aws_s3_bucket.checkpoints.id

  rule {
    default_retention {
      mode = "COMPLIANCE"
      days = var.audit_checkpoint_retention_days
    }
  }

  depends_on = [aws_s3_bucket_versioning.checkpoints]
}

resource "aws_s3_bucket_public_access_block" "checkpoints" {
  bucket                  = aws_s3_bucket.checkpoints.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "checkpoints" {
  bucket = aws_s3_bucket.checkpoints.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

# SSE-S3, not a customer-managed key: checkpoints are signed hashes (no secret), and SSE-KMS would take
# kms:GenerateDataKey for the replicas and kms:Decrypt for every reader besides the calls they make.
resource "aws_s3_bucket_server_side_encryption_configuration" "checkpoints" {
  bucket = aws_s3_bucket.checkpoints.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

# Versions stay until their retention ends and after it (nothing expires them); only interrupted uploads are cleaned.
resource "aws_s3_bucket_lifecycle_configuration" "checkpoints" {
  bucket = aws_s3_bucket.checkpoints.id

  rule {
    id     = "abort-incomplete-uploads"
    status = "Enabled"
    filter {}
    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }

  depends_on = [aws_s3_bucket_versioning.checkpoints]
}

data "aws_iam_policy_document" "checkpoints_bucket" {
  # Object Lock already refuses them within retention; this refuses them after it too, and refuses delete markers
  # (DeleteObject without a version), which would hide the newest checkpoints from a plain listing.
  statement {
    sid       = "NoDeletes"
    effect    = "Deny"
    actions   = ["s3:DeleteObject", "s3:DeleteObjectVersion"]
    resources = ["${aws_s3_bucket.checkpoints.arn}/*"]
    principals {
      type        = "AWS"
      identifiers = ["*"]
    }
  }

  # Checkpoints come from the replicas alone: nobody else can add one that verifiers would have to read past.
  statement {
    sid       = "OnlyTheReplicasWrite"
    effect    = "Deny"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.checkpoints.arn}/*"]
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

  # A checkpoint's name is never written twice, not even by the replicas: every PutObject must be conditional
  # (If-None-Match: *, which principald always sends), so nobody holding the task role can put a newer version over a
  # checkpoint that verifiers would then read instead of the locked original.
  statement {
    sid       = "NeverOverwrite"
    effect    = "Deny"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.checkpoints.arn}/*"]
    principals {
      type        = "AWS"
      identifiers = ["*"]
    }
    condition {
      test     = "Null"
      variable = "s3:if-none-match"
      values   = ["true"]
    }
  }

  statement {
    sid       = "TlsOnly"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.checkpoints.arn, "${aws_s3_bucket.checkpoints.arn}/*"]
    principals {
      type        = "AWS"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "checkpoints" {
  bucket     = aws_s3_bucket.checkpoints.id
  policy     = data.aws_iam_policy_document.checkpoints_bucket.json
  depends_on = [aws_s3_bucket_public_access_block.checkpoints]
}
