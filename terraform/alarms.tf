# kms:Sign beyond the expected rate: a stolen task credential (or a compromised replica) minting what no replica would
# shows here first. Subscribe to the topic (output alarm_topic_arn) or pass alarm_actions.
#
# The metric is KMS's own usage count (namespace AWS/Usage, CallCount, Service=KMS Type=API Resource=Sign
# Class=None): free, no trail needed, but per account and region, not per key, so other users of kms:Sign in the
# account and region count too (raise kms_sign_alarm_threshold by theirs). A count of the CA key alone would need a
# CloudWatch Logs metric filter on a CloudTrail trail that delivers to CloudWatch Logs (eventName Sign, the key's ARN
# in resources); this module adds no trail for it.
#
# What the replicas sign with the root: an intermediate at start and every 2/3 of intermediate_lifetime, an audit
# checkpoint a minute while the audit log moves, server certificates (monthly), the root's CRL and OCSP answers about
# intermediates when revocations change them. OCSP requests to the root are signed by KMS too when they miss the
# responder's cache (each serial once per revocation epoch, every request naming several certificates): a flood of
# those from relying_party_cidrs shows here as well, and draws on the account's KMS request quota.

locals {
  kms_sign_alarm_threshold = var.kms_sign_alarm_threshold != null ? var.kms_sign_alarm_threshold : var.replicas * 20
}

resource "aws_sns_topic" "alarms" {
  name              = "${var.name}-alarms"
  kms_master_key_id = aws_kms_key.data.arn
  tags              = var.tags
}

resource "aws_cloudwatch_metric_alarm" "kms_sign_rate" {
  alarm_name          = "${var.name}-kms-sign-rate"
  alarm_description   = "kms:Sign calls in this account and region above the ${var.name} replicas' expected rate (terraform/alarms.tf): look for signatures no replica asked for (CloudTrail, eventName Sign)."
  namespace           = "AWS/Usage"
  metric_name         = "CallCount"
  dimensions          = { Service = "KMS", Type = "API", Resource = "Sign", Class = "None" }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  threshold           = local.kms_sign_alarm_threshold
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = concat([aws_sns_topic.alarms.arn], var.alarm_actions)
  tags                = var.tags
}
