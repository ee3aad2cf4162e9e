resource "aws_ecs_cluster" "this" {
  name = var.name

  setting {
    name  = "containerInsights"
    value = "enabled"
  }

  tags = var.tags
}

resource "aws_cloudwatch_log_group" "this" {
  name              = "/ecs/${var.name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.data.arn
  tags              = var.tags
}

locals {
  data_dir = "/var/lib/principald/data"
  environment = merge({
    PRINCIPALD_STORE                 = "dynamodb"
    PRINCIPALD_DYNAMODB_TABLE_PREFIX = "${var.name}-"
    PRINCIPALD_CA_KEY                = local.ca_key_uri
    PRINCIPALD_LISTEN                = "0.0.0.0:${var.grpc_port}"
    PRINCIPALD_HEALTH_LISTEN         = "0.0.0.0:${var.health_port}"
    PRINCIPALD_PKI_LISTEN            = "0.0.0.0:${var.pki_port}"
    PRINCIPALD_PKI_URL               = local.pki_url
    PRINCIPALD_DATA_DIR              = local.data_dir
    PRINCIPALD_SERVER_NAMES          = join(",", concat([aws_lb.this.dns_name], var.server_names))
    PRINCIPALD_CERT_VALIDITY         = var.cert_validity
    PRINCIPALD_INTERMEDIATE_LIFETIME = var.intermediate_lifetime
    PRINCIPALD_AUDIT_CHECKPOINTS     = local.audit_checkpoints
    PRINCIPALD_LOG_FORMAT            = "json"
    AWS_REGION                       = data.aws_region.current.name
  })
  # What certificates name for revocation status: the NLB's PKI listener unless a name or CDN in front is given.
  pki_url = var.pki_url != "" ? var.pki_url : (
    var.pki_listener_port == 80 ? "http://${aws_lb.this.dns_name}" : "http://${aws_lb.this.dns_name}:${var.pki_listener_port}"
  )
}

resource "aws_ecs_task_definition" "this" {
  family                   = var.name
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.cpu
  memory                   = var.memory
  task_role_arn            = aws_iam_role.task.arn
  execution_role_arn       = aws_iam_role.execution.arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }

  # The data dir holds only what a replica derives at start (the CA certificate from the store, its server
  # certificate): task-local scratch space, so the root filesystem can stay read-only.
  volume {
    name = "data"
  }

  container_definitions = jsonencode([
    {
      name                   = "principald"
      image                  = var.image
      essential              = true
      user                   = "10001:10001"
      readonlyRootFilesystem = true
      privileged             = false
      command                = ["serve"]
      portMappings = [
        { containerPort = var.grpc_port, protocol = "tcp" },
        { containerPort = var.health_port, protocol = "tcp" },
        { containerPort = var.pki_port, protocol = "tcp" },
      ]
      mountPoints = [{ sourceVolume = "data", containerPath = local.data_dir, readOnly = false }]
      environment = [for k, v in local.environment : { name = k, value = v } if v != ""]
      secrets     = [for k, arn in var.secrets : { name = k, valueFrom = arn }]
      linuxParameters = {
        capabilities       = { drop = ["ALL"] }
        initProcessEnabled = true
      }
      stopTimeout = 30
      logConfiguration = {
        logDriver = "awslogs"
        options = {
          awslogs-group         = aws_cloudwatch_log_group.this.name
          awslogs-region        = data.aws_region.current.name
          awslogs-stream-prefix = "principald"
        }
      }
    }
  ])

  tags = var.tags
}

resource "aws_ecs_service" "this" {
  name                               = var.name
  cluster                            = aws_ecs_cluster.this.id
  task_definition                    = aws_ecs_task_definition.this.arn
  desired_count                      = var.replicas
  launch_type                        = "FARGATE"
  platform_version                   = "LATEST"
  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200
  health_check_grace_period_seconds  = 30
  propagate_tags                     = "SERVICE"

  network_configuration {
    subnets          = var.private_subnet_ids
    security_groups  = [aws_security_group.service.id]
    assign_public_ip = false
  }

  load_balancer {
    target_group_arn = aws_lb_target_group.grpc.arn
    container_name   = "principald"
    container_port   = var.grpc_port
  }

  load_balancer {
    target_group_arn = aws_lb_target_group.pki.arn
    container_name   = "principald"
    container_port   = var.pki_port
  }

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  depends_on = [aws_lb_listener.grpc, aws_lb_listener.pki, aws_iam_role_policy.task]
  tags       = var.tags
}
