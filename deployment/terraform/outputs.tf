output "cluster_name" {
  description = "Name of the EKS cluster."
  value       = module.eks.cluster_name
}

output "cluster_endpoint" {
  description = "Endpoint of the EKS control plane."
  value       = module.eks.cluster_endpoint
}

output "configure_kubectl" {
  description = "Command that points kubectl at the cluster."
  value       = "aws eks update-kubeconfig --region ${var.region} --name ${module.eks.cluster_name}"
}

output "redis_url" {
  description = "REDIS_URL for the gateway (TLS; a Redis Cluster URL in cluster mode)."
  value = (var.redis_cluster_mode
    ? "rediss+cluster://${aws_elasticache_replication_group.redis.configuration_endpoint_address}:6379"
    : "rediss://${aws_elasticache_replication_group.redis.primary_endpoint_address}:6379/0"
  )
}
