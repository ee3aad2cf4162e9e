# Clients -> NLB (TCP, TLS passthrough) -> replicas. An NLB or ALB *TLS* listener would terminate TLS and principald
# would never see the client certificate it authenticates by: the listener must be TCP.
# Relying parties -> NLB (TCP :80) -> replicas' public PKI port (CRLs, OCSP; plain HTTP, signed content). The health
# port stays private to the NLB's health checks.

locals {
  relying_party_cidrs = length(var.relying_party_cidrs) > 0 ? var.relying_party_cidrs : var.client_cidrs
}

resource "aws_security_group" "nlb" {
  name        = "${var.name}-nlb"
  description = "principald NLB: the gRPC listener, from client networks"
  vpc_id      = var.vpc_id
  tags        = var.tags
}

resource "aws_vpc_security_group_ingress_rule" "nlb_clients" {
  for_each          = toset(var.client_cidrs)
  security_group_id = aws_security_group.nlb.id
  description       = "gRPC over mTLS from ${each.value}"
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = var.listener_port
  to_port           = var.listener_port
}

resource "aws_vpc_security_group_egress_rule" "nlb_grpc" {
  security_group_id            = aws_security_group.nlb.id
  description                  = "to the replicas' gRPC port"
  referenced_security_group_id = aws_security_group.service.id
  ip_protocol                  = "tcp"
  from_port                    = var.grpc_port
  to_port                      = var.grpc_port
}

resource "aws_vpc_security_group_egress_rule" "nlb_health" {
  security_group_id            = aws_security_group.nlb.id
  description                  = "health checks to the replicas' /readyz"
  referenced_security_group_id = aws_security_group.service.id
  ip_protocol                  = "tcp"
  from_port                    = var.health_port
  to_port                      = var.health_port
}

resource "aws_vpc_security_group_ingress_rule" "nlb_relying_parties" {
  for_each          = toset(local.relying_party_cidrs)
  security_group_id = aws_security_group.nlb.id
  description       = "CRLs and OCSP (plain HTTP) from ${each.value}"
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = var.pki_listener_port
  to_port           = var.pki_listener_port
}

resource "aws_vpc_security_group_egress_rule" "nlb_pki" {
  security_group_id            = aws_security_group.nlb.id
  description                  = "to the replicas' PKI port"
  referenced_security_group_id = aws_security_group.service.id
  ip_protocol                  = "tcp"
  from_port                    = var.pki_port
  to_port                      = var.pki_port
}

resource "aws_security_group" "service" {
  name        = "${var.name}-service"
  description = "principald replicas: gRPC from the client networks (through the NLB), health from the NLB only"
  vpc_id      = var.vpc_id
  tags        = var.tags
}

# The target group preserves client addresses (principald logs who was refused), so replicas see the clients' own IPs.
resource "aws_vpc_security_group_ingress_rule" "service_grpc" {
  for_each          = toset(var.client_cidrs)
  security_group_id = aws_security_group.service.id
  description       = "gRPC over mTLS from ${each.value}, through the NLB"
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = var.grpc_port
  to_port           = var.grpc_port
}

resource "aws_vpc_security_group_ingress_rule" "service_health" {
  security_group_id            = aws_security_group.service.id
  description                  = "plain-HTTP health checks from the NLB only"
  referenced_security_group_id = aws_security_group.nlb.id
  ip_protocol                  = "tcp"
  from_port                    = var.health_port
  to_port                      = var.health_port
}

resource "aws_vpc_security_group_ingress_rule" "service_pki" {
  for_each          = toset(local.relying_party_cidrs)
  security_group_id = aws_security_group.service.id
  description       = "CRLs and OCSP from ${each.value}, through the NLB"
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = var.pki_port
  to_port           = var.pki_port
}

# Egress of the replicas: HTTPS to the AWS APIs through VPC endpoints (endpoints.tf), and nothing else. principald
# calls out to nothing but DynamoDB, KMS and S3 (it serves CRLs and OCSP, it fetches none), and ECS pulls the image and
# ships the logs through the task's interface: no route to the internet, no NAT. What remains:
# - HTTPS to the interface endpoints (KMS, Logs, ECR, SSM / Secrets Manager): their security group, or, when the VPC
#   brings its own endpoints (create_vpc_endpoints = false), the VPC's own ranges;
# - HTTPS to the S3 and DynamoDB prefix lists, which the gateway endpoints route (without a gateway endpoint they
#   would leave through NAT, where the task role's aws:SourceVpce / aws:SourceVpc conditions refuse them).
resource "aws_vpc_security_group_egress_rule" "service_interface_endpoints" {
  count                        = var.create_vpc_endpoints ? 1 : 0
  security_group_id            = aws_security_group.service.id
  description                  = "HTTPS to the interface endpoints (KMS, CloudWatch Logs, ECR, SSM, Secrets Manager)"
  referenced_security_group_id = aws_security_group.endpoints[0].id
  ip_protocol                  = "tcp"
  from_port                    = 443
  to_port                      = 443
}

resource "aws_vpc_security_group_egress_rule" "service_vpc_https" {
  for_each          = var.create_vpc_endpoints ? toset([]) : toset([for a in data.aws_vpc.this.cidr_block_associations : a.cidr_block])
  security_group_id = aws_security_group.service.id
  description       = "HTTPS to the VPC's own interface endpoints in ${each.value}"
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
}

resource "aws_vpc_security_group_egress_rule" "service_gateway_endpoints" {
  for_each          = data.aws_prefix_list.gateway
  security_group_id = aws_security_group.service.id
  description       = "HTTPS to ${each.key} through its gateway endpoint"
  prefix_list_id    = each.value.id
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
}

resource "aws_lb" "this" {
  #checkov:skip=CKV_AWS_91:NLB access logs cover TLS listeners only; with TCP passthrough principald logs every refused connection and request itself
  #checkov:skip=CKV2_AWS_20:an NLB, not an ALB; its port-80 listener serves signed CRLs and OCSP answers, which relying parties fetch over plain HTTP
  name                             = var.name
  load_balancer_type               = "network"
  internal                         = var.internal
  subnets                          = var.load_balancer_subnet_ids
  security_groups                  = [aws_security_group.nlb.id]
  enable_cross_zone_load_balancing = true
  enable_deletion_protection       = var.deletion_protection
  tags                             = var.tags
}

resource "aws_lb_target_group" "grpc" {
  name                 = "${var.name}-grpc"
  port                 = var.grpc_port
  protocol             = "TCP"
  target_type          = "ip"
  vpc_id               = var.vpc_id
  deregistration_delay = 30
  preserve_client_ip   = true

  health_check {
    protocol            = "HTTP"
    port                = tostring(var.health_port)
    path                = "/readyz"
    matcher             = "200"
    interval            = 10
    healthy_threshold   = 2
    unhealthy_threshold = 2
  }

  tags = var.tags
}

# TCP passthrough on purpose: principald terminates TLS itself and authenticates by the client certificate.
resource "aws_lb_listener" "grpc" {
  load_balancer_arn = aws_lb.this.arn
  port              = var.listener_port
  protocol          = "TCP"

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.grpc.arn
  }

  tags = var.tags
}

resource "aws_lb_target_group" "pki" {
  name                 = "${var.name}-pki"
  port                 = var.pki_port
  protocol             = "TCP"
  target_type          = "ip"
  vpc_id               = var.vpc_id
  deregistration_delay = 30
  preserve_client_ip   = true

  health_check {
    protocol            = "HTTP"
    port                = tostring(var.health_port)
    path                = "/readyz"
    matcher             = "200"
    interval            = 10
    healthy_threshold   = 2
    unhealthy_threshold = 2
  }

  tags = var.tags
}

# Plain HTTP on purpose: CRLs and OCSP answers are signed, and relying parties fetch them over http:// (RFC 5280,
# RFC 6960); TLS here would make revocation checking depend on another certificate's revocation status.
resource "aws_lb_listener" "pki" {
  #checkov:skip=CKV_AWS_2:CRLs and OCSP responses are signed objects served over plain HTTP by design (RFC 5280 4.2.1.13, RFC 6960 A.1)
  #checkov:skip=CKV2_AWS_74:no TLS on this listener (see CKV_AWS_2)
  #checkov:skip=CKV_AWS_103:no TLS on this listener (see CKV_AWS_2)
  load_balancer_arn = aws_lb.this.arn
  port              = var.pki_listener_port
  protocol          = "TCP"

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.pki.arn
  }

  tags = var.tags
}
