# terraform apply -var-file=environments/production.tfvars   (pairs with k8s/overlays/production)
environment         = "production"
region              = "us-east-1"
az_count            = 3
single_nat_gateway  = false
node_instance_types = ["m6i.xlarge", "m6a.xlarge"]
node_min_size       = 3
node_desired_size   = 3
node_max_size       = 12

redis_node_type          = "cache.r7g.large"
redis_cluster_mode       = true
redis_shards             = 3
redis_replicas_per_shard = 1

tags = {
  CostCenter = "platform"
}
