variable "environment" {
  type        = string
  description = "Name of this environment (small, production, ...); part of every resource name."
}

variable "region" {
  type        = string
  description = "AWS region for the cluster and the Redis."
  default     = "us-east-1"
}

variable "cluster_name" {
  type        = string
  description = "Name of the EKS cluster."
  default     = "llm-gateway-eks"
}

variable "kubernetes_version" {
  type        = string
  description = "EKS control-plane version (the manifests in deployment/k8s need 1.29 or later)."
  default     = "1.30"
}

variable "vpc_cidr" {
  type        = string
  description = "CIDR block of the VPC; split into one private and one public subnet per zone."
  default     = "10.40.0.0/16"
}

variable "az_count" {
  type        = number
  description = "Availability zones to spread subnets, nodes and Redis replicas over (2 or more)."
  default     = 3

  validation {
    condition     = var.az_count >= 2
    error_message = "az_count must be at least 2 for a multi-AZ deployment."
  }
}

variable "single_nat_gateway" {
  type        = bool
  description = "One NAT gateway for all zones (cheaper) instead of one per zone (survives a zone outage)."
  default     = false
}

variable "node_instance_types" {
  type        = list(string)
  description = "EC2 instance types of the managed node group that runs the gateway."
}

variable "node_min_size" {
  type        = number
  description = "Fewest nodes in the node group."
}

variable "node_desired_size" {
  type        = number
  description = "Nodes to start with (the cluster autoscaler moves it between min and max)."
}

variable "node_max_size" {
  type        = number
  description = "Most nodes in the node group."
}

variable "redis_node_type" {
  type        = string
  description = "ElastiCache node type, e.g. cache.t4g.medium or cache.r7g.large."
}

variable "redis_cluster_mode" {
  type        = bool
  description = "ElastiCache cluster mode (sharded, a Redis Cluster URL for the gateway) instead of one primary with replicas."
  default     = false
}

variable "redis_shards" {
  type        = number
  description = "Shards (node groups) in cluster mode; 1 otherwise."
  default     = 1
}

variable "redis_replicas_per_shard" {
  type        = number
  description = "Replicas of each primary, placed in other zones (at least 1 for automatic failover)."
  default     = 1

  validation {
    condition     = var.redis_replicas_per_shard >= 1
    error_message = "redis_replicas_per_shard must be at least 1 (Multi-AZ failover needs a replica)."
  }
}

variable "redis_engine_version" {
  type        = string
  description = "Redis engine version of the ElastiCache replication group."
  default     = "7.1"
}

variable "tags" {
  type        = map(string)
  description = "Extra tags for every resource."
  default     = {}
}
