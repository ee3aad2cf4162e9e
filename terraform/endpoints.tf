# The replicas reach AWS through VPC endpoints, never the internet: gateway endpoints for DynamoDB and S3 (audit
# checkpoints, and the layers of ECR images) on the private subnets' route tables, interface endpoints with private
# DNS for KMS, CloudWatch Logs (the awslogs driver), ECR (image pulls) and, when `secrets` names them, SSM and Secrets
# Manager (both used by ECS with the execution role). Fargate makes these calls from the task's own network interface,
# so they need the endpoints too; the ECS control plane, the task metadata and credentials endpoints (169.254.170.2)
# and the VPC's DNS resolver need none, and security groups do not filter them.
#
# The task role works only through these endpoints (iam.tf: aws:SourceVpce on every statement, and an explicit deny
# for requests from anywhere else). aws:SourceVpce and aws:SourceVpc are set on requests through gateway endpoints
# (S3, DynamoDB) and interface endpoints (KMS) alike, and absent on requests over the internet; aws:SourceIp is no
# use here (it never holds the private address of a request through an endpoint), aws:VpcSourceIp would tie requests
# to addresses that Fargate picks.
#
# With create_vpc_endpoints = false the VPC brings its own endpoints (AWS refuses a second interface endpoint with
# private DNS for one service, or a second gateway endpoint on a route table): the task role is then tied to the VPC
# (aws:SourceVpc) instead of to these endpoints.

locals {
  region = data.aws_region.current.name
  secrets_services = compact([
    anytrue([for arn in values(var.secrets) : strcontains(arn, ":ssm:")]) ? "ssm" : "",
    anytrue([for arn in values(var.secrets) : strcontains(arn, ":secretsmanager:")]) ? "secretsmanager" : "",
  ])
  interface_services = var.create_vpc_endpoints ? toset(concat(["kms", "logs", "ecr.api", "ecr.dkr"], local.secrets_services)) : toset([])
  gateway_services   = var.create_vpc_endpoints ? toset(["dynamodb", "s3"]) : toset([])
  route_table_ids    = length(var.private_route_table_ids) > 0 ? var.private_route_table_ids : distinct([for table in data.aws_route_table.private : table.id])

  # What the task role's statements require of a request: through this module's endpoint of the service, or through
  # the VPC when the VPC brings its own endpoints.
  vpc_condition_key = var.create_vpc_endpoints ? "aws:SourceVpce" : "aws:SourceVpc"
  dynamodb_source   = var.create_vpc_endpoints ? [aws_vpc_endpoint.gateway["dynamodb"].id] : [var.vpc_id]
  s3_source         = var.create_vpc_endpoints ? [aws_vpc_endpoint.gateway["s3"].id] : [var.vpc_id]
  kms_source        = var.create_vpc_endpoints ? [aws_vpc_endpoint.interface["kms"].id] : [var.vpc_id]
  vpc_sources       = distinct(concat(local.dynamodb_source, local.s3_source, local.kms_source))
}

data "aws_vpc" "this" {
  id = var.vpc_id
}

data "aws_route_table" "private" {
  for_each  = var.create_vpc_endpoints && length(var.private_route_table_ids) == 0 ? toset(var.private_subnet_ids) : toset([])
  subnet_id = each.value
}

# The S3 and DynamoDB address ranges, which the replicas' egress names (the gateway endpoints route them).
data "aws_prefix_list" "gateway" {
  for_each = toset(["dynamodb", "s3"])
  name     = "com.amazonaws.${local.region}.${each.key}"
}

# Endpoint policies: principals of this account only, so the endpoints carry no other account's credentials (no
# copying out with someone else's keys). S3 also serves ECR's image layers, which ECR hands out as URLs that AWS
# signs, from a bucket of its own. With private DNS (and the gateway routes) these endpoints serve every workload of
# the VPC on those subnets: if others there use other accounts' credentials, bring your own endpoints
# (create_vpc_endpoints = false).
data "aws_iam_policy_document" "endpoint" {
  #checkov:skip=CKV_AWS_1:an endpoint policy grants nothing (IAM does): "*" here only lets this account's principals through
  #checkov:skip=CKV_AWS_49:an endpoint policy grants nothing (IAM does): "*" here only lets this account's principals through
  statement {
    sid       = "ThisAccountsPrincipals"
    actions   = ["*"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["*"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:PrincipalAccount"
      values   = [data.aws_caller_identity.current.account_id]
    }
  }
}

data "aws_iam_policy_document" "s3_endpoint" {
  #checkov:skip=CKV_AWS_283:an endpoint policy grants nothing (IAM does); the layer bucket is ECR's, and the URLs ECR hands out are signed by AWS, not by a principal of this account
  source_policy_documents = [data.aws_iam_policy_document.endpoint.json]

  statement {
    sid       = "EcrImageLayers"
    actions   = ["s3:GetObject"]
    resources = ["arn:${data.aws_partition.current.partition}:s3:::prod-${local.region}-starport-layer-bucket/*"]
    principals {
      type        = "AWS"
      identifiers = ["*"]
    }
  }
}

resource "aws_vpc_endpoint" "gateway" {
  for_each          = local.gateway_services
  vpc_id            = var.vpc_id
  service_name      = "com.amazonaws.${local.region}.${each.key}"
  vpc_endpoint_type = "Gateway"
  route_table_ids   = local.route_table_ids
  policy            = each.key == "s3" ? data.aws_iam_policy_document.s3_endpoint.json : data.aws_iam_policy_document.endpoint.json
  tags              = merge(var.tags, { Name = "${var.name}-${each.key}" })
}

# Private DNS makes these endpoints the VPC's address of each service, for every workload in it: they accept HTTPS
# from the whole VPC (what may be done through them is up to IAM and the endpoint policy), so other workloads keep
# reaching these services.
resource "aws_security_group" "endpoints" {
  count       = var.create_vpc_endpoints ? 1 : 0
  name        = "${var.name}-endpoints"
  description = "principald's interface endpoints (KMS, Logs, ECR): HTTPS from the VPC"
  vpc_id      = var.vpc_id
  tags        = var.tags
}

resource "aws_vpc_security_group_ingress_rule" "endpoints_https" {
  for_each          = var.create_vpc_endpoints ? toset([for a in data.aws_vpc.this.cidr_block_associations : a.cidr_block]) : toset([])
  security_group_id = aws_security_group.endpoints[0].id
  description       = "HTTPS to the AWS APIs from ${each.value} (the VPC)"
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
}

resource "aws_vpc_endpoint" "interface" {
  for_each            = local.interface_services
  vpc_id              = var.vpc_id
  service_name        = "com.amazonaws.${local.region}.${each.key}"
  vpc_endpoint_type   = "Interface"
  private_dns_enabled = true
  subnet_ids          = var.private_subnet_ids
  security_group_ids  = [aws_security_group.endpoints[0].id]
  policy              = data.aws_iam_policy_document.endpoint.json
  tags                = merge(var.tags, { Name = "${var.name}-${replace(each.key, ".", "-")}" })
}
