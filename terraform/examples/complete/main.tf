# A deployment into an existing VPC: three replicas behind an internal NLB, the CA key in KMS, DynamoDB tables, VPC
# endpoints (no internet egress), an Object Lock bucket for signed audit checkpoints.
#
#   terraform init && terraform apply -var vpc_id=vpc-... -var 'private_subnet_ids=["subnet-a","subnet-b"]' \
#     -var 'client_cidrs=["10.0.0.0/8"]' -var image=111122223333.dkr.ecr.eu-west-1.amazonaws.com/principald:1.0.0@sha256:b6840c42b9fad5839fdbe7543198f097ad223f8e6193c5d72bfbbd7008ee4e46 \
#     -var operator_role_arn=arn:aws:iam::111122223333:role/ca-operators \
#     -var key_admin_role_arn=arn:aws:iam::111122223333:role/security-admins \
#     -var deploy_role_arn=arn:aws:iam::111122223333:role/terraform

terraform {
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.40"
    }
  }
}

provider "aws" {
  region = var.region
}

variable "region" {
  description = "AWS region of the deployment."
  type        = string
  default     = "eu-west-1"
}

variable "vpc_id" {
  description = "The existing VPC."
  type        = string
}

variable "private_subnet_ids" {
  description = "Private subnets, at least two availability zones."
  type        = list(string)
}

variable "client_cidrs" {
  description = "Networks of workers and operators."
  type        = list(string)
}

variable "operator_role_arn" {
  description = "The role that runs `principald bootstrap` (it signs the CA certificate and the first admin's with the CA key)."
  type        = string
}

variable "key_admin_role_arn" {
  description = "The role that administers (never uses) the CA keys."
  type        = string
}

variable "deploy_role_arn" {
  description = "The role this configuration is applied with: the only one that may change the CA keys' policies."
  type        = string
}

variable "image" {
  description = "principald image in ECR, by digest: REPOSITORY[:TAG]@sha256:DIGEST."
  type        = string
}

variable "private_route_table_ids" {
  description = "Route tables of the private subnets (for the DynamoDB and S3 gateway endpoints); empty: looked up from the subnets."
  type        = list(string)
  default     = []
}

module "principald" {
  source = "../.."

  name                         = "principald"
  vpc_id                       = var.vpc_id
  private_subnet_ids           = var.private_subnet_ids
  private_route_table_ids      = var.private_route_table_ids
  load_balancer_subnet_ids     = var.private_subnet_ids
  internal                     = true
  client_cidrs                 = var.client_cidrs
  image                        = var.image
  replicas                     = 3
  cert_validity                = "worker=24h,service=7d,user=8h"
  server_names                 = ["principald.internal.example.com"]
  ca_key_signers               = [var.operator_role_arn]
  ca_key_administrators        = [var.key_admin_role_arn]
  ca_key_policy_administrators = [var.deploy_role_arn]

  tags = {
    service = "principald"
  }
}

output "endpoint" {
  description = "Where principalctl profiles point."
  value       = module.principald.endpoint
}

output "ca_key_uri" {
  description = "Pass to `principald bootstrap --ca-key`."
  value       = module.principald.ca_key_uri
}

output "audit_checkpoints" {
  description = "Where the signed audit checkpoints are: `principalctl audit verify --checkpoints`."
  value       = module.principald.audit_checkpoints
}

output "table_prefix" {
  description = "Pass to `principald bootstrap --dynamodb-table-prefix`."
  value       = module.principald.table_prefix
}
