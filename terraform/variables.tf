variable "name" {
  description = "Name of the deployment: prefix of every resource and of the DynamoDB tables (NAME-principals, ...)."
  type        = string
  default     = "principald"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}$", var.name))
    error_message = "name: 2-31 characters, lowercase letters, digits and '-', starting with a letter."
  }
}

variable "vpc_id" {
  description = "The existing VPC to deploy into."
  type        = string
}

variable "private_subnet_ids" {
  description = "Subnets of the replicas (private; they reach DynamoDB and KMS through NAT or VPC endpoints)."
  type        = list(string)
}

variable "load_balancer_subnet_ids" {
  description = "Subnets of the network load balancer (public ones for an internet-facing NLB)."
  type        = list(string)
}

variable "internal" {
  description = "Whether the NLB is internal (reachable from inside the VPC and peered networks only)."
  type        = bool
  default     = true
}

variable "client_cidrs" {
  description = "Networks allowed to reach the gRPC port through the NLB (workers, operators)."
  type        = list(string)
}

variable "image" {
  description = "principald container image (built from the repository's Dockerfile), e.g. ECR_URL:TAG."
  type        = string
}

variable "replicas" {
  description = "Number of ECS tasks. Each signs with its own in-memory intermediate."
  type        = number
  default     = 3
}

variable "cpu" {
  description = "Fargate CPU units per task."
  type        = number
  default     = 1024
}

variable "memory" {
  description = "Fargate memory (MiB) per task."
  type        = number
  default     = 2048
}

variable "listener_port" {
  description = "Port of the NLB's TCP listener that clients connect to."
  type        = number
  default     = 443
}

variable "grpc_port" {
  description = "principald's gRPC mTLS port in the task."
  type        = number
  default     = 8443
}

variable "health_port" {
  description = "principald's plain-HTTP health port in the task (/healthz, /readyz)."
  type        = number
  default     = 8080
}

variable "server_names" {
  description = "Extra DNS names in the replicas' server certificates (a Route 53 name in front of the NLB). The NLB's DNS name is always included."
  type        = list(string)
  default     = []
}

variable "cert_validity" {
  description = "Client certificate validity per type, as principald's --cert-validity (e.g. \"worker=24h,user=8h\"); empty for the default 30 days."
  type        = string
  default     = ""
}

variable "intermediate_lifetime" {
  description = "Signing window of each replica's in-memory intermediate (replaced at 2/3 of it)."
  type        = string
  default     = "24h"
}

variable "pki_port" {
  description = "principald's public plain-HTTP PKI port in the task (CRLs under /crl/, OCSP at /ocsp)."
  type        = number
  default     = 8081
}

variable "pki_listener_port" {
  description = "Port of the NLB's TCP listener relying parties fetch CRLs and OCSP answers from (plain HTTP, as RFC 5280 and RFC 6960 clients expect)."
  type        = number
  default     = 80
}

variable "relying_party_cidrs" {
  description = "Networks allowed to fetch CRLs and OCSP answers through the NLB; empty: the client networks (client_cidrs). Revocation status is public information: widen it to every relying party."
  type        = list(string)
  default     = []
}

variable "pki_url" {
  description = "Base URL written into every certificate for its CRL (BASE/crl/...) and OCSP responder (BASE/ocsp); empty: http://NLB_DNS_NAME[:pki_listener_port]. Set it when a Route 53 name or a CDN fronts the NLB's PKI listener."
  type        = string
  default     = ""
}

variable "secrets" {
  description = "Extra environment variables for principald from SSM Parameter Store or Secrets Manager: name => parameter or secret ARN (e.g. PRINCIPALD_PERMISSIONS_FILE contents are not secrets; a PKCS#11 PIN is)."
  type        = map(string)
  default     = {}
}

variable "log_retention_days" {
  description = "Retention of the replicas' CloudWatch logs."
  type        = number
  default     = 365
}

variable "deletion_protection" {
  description = "Protect the tables and the NLB from deletion (turn off only to tear down a test deployment)."
  type        = bool
  default     = true
}

variable "ca_key_deletion_window_days" {
  description = "Waiting period before a scheduled deletion of the CA key takes effect."
  type        = number
  default     = 30
}

variable "ca_key_administrators" {
  description = "IAM principal ARNs that administer the CA keys (describe, enable, disable, tag, schedule deletion), never sign, derive, create grants or change the key policies. Required: with no default, a broad IAM permission elsewhere in the account never becomes the right to administer the CA."
  type        = list(string)
  validation {
    condition     = length(var.ca_key_administrators) > 0
    error_message = "Name at least one CA key administrator (an IAM role ARN)."
  }
}

variable "ca_key_policy_administrators" {
  description = "IAM principal ARNs that may change the CA keys' policies (kms:PutKeyPolicy): the role terraform applies this module with (KMS refuses a key policy its creator could not change). Nobody else may, and nobody may create grants on the CA keys."
  type        = list(string)
  validation {
    condition     = length(var.ca_key_policy_administrators) > 0
    error_message = "Name the role that applies this module (it must be able to update the key policies)."
  }
}

variable "ca_key_signers" {
  description = "Extra IAM principal ARNs that may sign with the CA key (ECDSA_SHA_256, RAW or DIGEST only), e.g. the operator role that runs `principald bootstrap` and root rotation. The replicas' task role is always allowed."
  type        = list(string)
  default     = []
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
  default     = {}
}
