output "endpoint" {
  description = "What clients and principalctl profiles connect to: https://NLB_DNS_NAME:LISTENER_PORT."
  value       = "https://${aws_lb.this.dns_name}:${var.listener_port}"
}

output "nlb_dns_name" {
  description = "DNS name of the network load balancer (point a Route 53 alias at it and add the name to server_names)."
  value       = aws_lb.this.dns_name
}

output "ca_key_uri" {
  description = "The CA key as principald names it (PRINCIPALD_CA_KEY): use it for `principald bootstrap`."
  value       = local.ca_key_uri
}

output "ca_key_arn" {
  description = "ARN of the KMS key holding the CA root."
  value       = aws_kms_key.ca.arn
}

output "ca_derive_key_arn" {
  description = "ARN of the KMS HMAC key beside the CA root from which replica intermediates' keys are derived (alias: the CA alias + \"-derive\")."
  value       = aws_kms_key.ca_derive.arn
}

output "table_prefix" {
  description = "PRINCIPALD_DYNAMODB_TABLE_PREFIX of this deployment."
  value       = "${var.name}-"
}

output "table_arns" {
  description = "ARNs of the principals, certificates, meta and audit tables."
  value       = concat(local.tables, [aws_dynamodb_table.audit.arn])
}

output "task_role_arn" {
  description = "The replicas' IAM role (least privilege: the tables, the CA key and its derivation key, PutObject of audit checkpoints; through the VPC endpoints only)."
  value       = aws_iam_role.task.arn
}

output "service_security_group_id" {
  description = "Security group of the replicas."
  value       = aws_security_group.service.id
}

output "log_group" {
  description = "CloudWatch log group of the replicas."
  value       = aws_cloudwatch_log_group.this.name
}

output "pki_url" {
  description = "Where relying parties fetch CRLs (BASE/crl/...) and OCSP answers (BASE/ocsp): what certificates name."
  value       = local.pki_url
}

output "audit_checkpoints_bucket" {
  description = "The S3 bucket (Object Lock, COMPLIANCE) of the signed audit checkpoints."
  value       = aws_s3_bucket.checkpoints.bucket
}

output "audit_checkpoints" {
  description = "Where the replicas write signed audit checkpoints (PRINCIPALD_AUDIT_CHECKPOINTS): s3://BUCKET/PREFIX, for `principalctl audit verify --checkpoints`."
  value       = local.audit_checkpoints
}

output "reader_role_arn" {
  description = "The read-only role for resource servers and auditors (null unless reader_principals is set)."
  value       = one(aws_iam_role.reader[*].arn)
}

output "alarm_topic_arn" {
  description = "SNS topic of the module's alarms (kms:Sign beyond the expected rate): subscribe to it."
  value       = aws_sns_topic.alarms.arn
}

output "vpc_endpoint_ids" {
  description = "The VPC endpoints the replicas use, by service (empty with create_vpc_endpoints = false)."
  value       = merge({ for k, e in aws_vpc_endpoint.gateway : k => e.id }, { for k, e in aws_vpc_endpoint.interface : k => e.id })
}
