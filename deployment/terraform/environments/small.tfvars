# terraform apply -var-file=environments/small.tfvars   (pairs with k8s/overlays/small)
environment         = "small"
region              = "us-east-1"
az_count            = 2
single_nat_gateway  = true
node_instance_types = ["m6i.large"]
node_min_size       = 2
node_desired_size   = 2
node_max_size       = 4

redis_node_type          = "cache.t4g.medium"
redis_cluster_mode       = false
redis_replicas_per_shard = 1
