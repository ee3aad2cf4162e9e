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
  description = "Subnets of the replicas (private; they reach AWS through VPC endpoints only, see create_vpc_endpoints)."
  type        = list(string)
}

variable "create_vpc_endpoints" {
  description = "Create the VPC endpoints the replicas use (gateway: DynamoDB, S3; interface, with private DNS: KMS, CloudWatch Logs, ECR api and dkr, and SSM / Secrets Manager when `secrets` names them). The task role works only through them (aws:SourceVpce). Set false when the VPC already has endpoints for these services (a second interface endpoint with private DNS, or a second gateway endpoint on the same route table, is refused by AWS): the task role is then tied to the VPC (aws:SourceVpc) and the replicas may reach HTTPS in the VPC and the S3 and DynamoDB prefix lists."
  type        = bool
  default     = true
}

variable "private_route_table_ids" {
  description = "Route tables of private_subnet_ids, for the DynamoDB and S3 gateway endpoints; empty: looked up from the subnets (which works only for subnets with an explicit route table association, not for subnets on the VPC's main route table)."
  type        = list(string)
  default     = []
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
  description = "principald container image (built from the repository's Dockerfile) by digest: REPOSITORY@sha256:DIGEST (a tag may be kept before the digest, REPOSITORY:TAG@sha256:DIGEST). A tag alone can be moved to other code after review; a digest cannot."
  type        = string

  validation {
    condition     = can(regex("^[^@\\s]+@sha256:[0-9a-f]{64}$", var.image))
    error_message = "image: name the image by digest, REPOSITORY[:TAG]@sha256:<64 hex digits> (e.g. from `docker buildx imagetools inspect` or the ECR console), not by tag alone: a tag can be re-pointed."
  }
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

variable "kms_sign_alarm_threshold" {
  description = "kms:Sign calls per 5 minutes in this account and region above which the alarm fires; null: replicas x 20 (a replica signs about 5 times in 5 minutes: an audit checkpoint a minute while the log moves, an intermediate every 2/3 of intermediate_lifetime, the root's CRL and intermediates' OCSP answers when revocations change them; x 2 for deployments, which run up to twice the replicas; x 2 headroom). Raise it by what other users of kms:Sign in the account and region sign."
  type        = number
  default     = null
}

variable "alarm_actions" {
  description = "Extra alarm actions (ARNs: SNS topics, ...) besides the module's SNS topic (output alarm_topic_arn)."
  type        = list(string)
  default     = []
}

variable "reader_principals" {
  description = "IAM principal ARNs that may assume the read-only role (output reader_role_arn): resource servers (AuthLayer, TokenVerifier) and auditors (`principalctl audit verify`). Empty: no reader role."
  type        = list(string)
  default     = []
}

variable "audit_checkpoints_bucket" {
  description = "Name of the S3 bucket (Object Lock, COMPLIANCE) for signed audit checkpoints; empty: NAME-checkpoints-ACCOUNT_ID (set it when the same name is deployed in two regions of one account)."
  type        = string
  default     = ""
}

variable "audit_checkpoints_prefix" {
  description = "Key prefix of the checkpoints in the bucket; the replicas may write under it only."
  type        = string
  default     = "checkpoints/"

  validation {
    condition     = !startswith(var.audit_checkpoints_prefix, "/") && !strcontains(var.audit_checkpoints_prefix, "*")
    error_message = "audit_checkpoints_prefix: no leading '/' and no '*'."
  }
}

variable "audit_checkpoint_retention_days" {
  description = "Object Lock retention (COMPLIANCE mode: nobody, the account root included, can delete or overwrite a checkpoint version before it ends, nor shorten it) of each audit checkpoint."
  type        = number
  default     = 365

  validation {
    condition     = var.audit_checkpoint_retention_days >= 1
    error_message = "audit_checkpoint_retention_days: at least 1."
  }
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
  default     = {}
}
