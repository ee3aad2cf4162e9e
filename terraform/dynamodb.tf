# The tables of migrations/dynamodb, one to one (tests/checks/terraform.rs compares them): keys, attributes, indexes and TTL.
# principald finds them by prefix: PRINCIPALD_DYNAMODB_TABLE_PREFIX = "NAME-".

resource "aws_dynamodb_table" "principals" {
  name                        = "${var.name}-principals"
  billing_mode                = "PAY_PER_REQUEST"
  hash_key                    = "id"
  deletion_protection_enabled = var.deletion_protection

  attribute {
    name = "id"
    type = "S"
  }

  attribute {
    name = "type_shard"
    type = "S"
  }

  attribute {
    name = "token_principal"
    type = "S"
  }

  attribute {
    name = "workload_node"
    type = "S"
  }

  attribute {
    name = "workload_shard"
    type = "S"
  }

  global_secondary_index {
    name            = "by_type_shard"
    hash_key        = "type_shard"
    range_key       = "id"
    projection_type = "ALL"
  }

  # Enrollment token items only (sparse): ListEnrollmentTokens reads one principal's tokens.
  global_secondary_index {
    name            = "by_token_principal"
    hash_key        = "token_principal"
    range_key       = "id"
    projection_type = "ALL"
  }

  # Workload entry items only (sparse): one node's entries, for its agent and for withdrawing a node.
  global_secondary_index {
    name            = "by_workload_node"
    hash_key        = "workload_node"
    range_key       = "id"
    projection_type = "ALL"
  }

  # Workload entry items only (sparse), spread over 8 shards: every entry, merged in id order.
  global_secondary_index {
    name            = "by_workload_shard"
    hash_key        = "workload_shard"
    range_key       = "id"
    projection_type = "ALL"
  }

  point_in_time_recovery {
    enabled = true
  }

  server_side_encryption {
    enabled     = true
    kms_key_arn = aws_kms_key.data.arn
  }

  tags = var.tags
}

resource "aws_dynamodb_table" "certificates" {
  name                        = "${var.name}-certificates"
  billing_mode                = "PAY_PER_REQUEST"
  hash_key                    = "serial"
  deletion_protection_enabled = var.deletion_protection

  attribute {
    name = "serial"
    type = "S"
  }

  attribute {
    name = "principal_id"
    type = "S"
  }

  attribute {
    name = "issued_key"
    type = "S"
  }

  attribute {
    name = "revoked_partition"
    type = "S"
  }

  global_secondary_index {
    name            = "by_principal"
    hash_key        = "principal_id"
    range_key       = "issued_key"
    projection_type = "ALL"
  }

  # Sparse: only revoked certificates carry revoked_partition. CRLs are built from it, one partition at a time.
  global_secondary_index {
    name               = "by_revocation"
    hash_key           = "revoked_partition"
    range_key          = "serial"
    projection_type    = "INCLUDE"
    non_key_attributes = ["revoked_at", "revocation_reason", "not_after", "expires_at", "issuer"]
  }

  ttl {
    attribute_name = "expires_at"
    enabled        = true
  }

  point_in_time_recovery {
    enabled = true
  }

  server_side_encryption {
    enabled     = true
    kms_key_arn = aws_kms_key.data.arn
  }

  tags = var.tags
}

resource "aws_dynamodb_table" "meta" {
  name                        = "${var.name}-meta"
  billing_mode                = "PAY_PER_REQUEST"
  hash_key                    = "key"
  deletion_protection_enabled = var.deletion_protection

  attribute {
    name = "key"
    type = "S"
  }

  point_in_time_recovery {
    enabled = true
  }

  server_side_encryption {
    enabled     = true
    kms_key_arn = aws_kms_key.data.arn
  }

  tags = var.tags
}

# The audit log: one item per event (chain + seq), hash-chained. The task role has no UpdateItem or DeleteItem on it,
# but its PutItem could replace an event: signed checkpoints outside the store catch that (README, "Audit log").
resource "aws_dynamodb_table" "audit" {
  name                        = "${var.name}-audit"
  billing_mode                = "PAY_PER_REQUEST"
  hash_key                    = "chain"
  range_key                   = "seq"
  deletion_protection_enabled = var.deletion_protection

  attribute {
    name = "chain"
    type = "S"
  }

  attribute {
    name = "seq"
    type = "N"
  }

  attribute {
    name = "shard"
    type = "S"
  }

  attribute {
    name = "id"
    type = "S"
  }

  global_secondary_index {
    name            = "by_time"
    hash_key        = "shard"
    range_key       = "id"
    projection_type = "ALL"
  }

  point_in_time_recovery {
    enabled = true
  }

  server_side_encryption {
    enabled     = true
    kms_key_arn = aws_kms_key.data.arn
  }

  tags = var.tags
}
