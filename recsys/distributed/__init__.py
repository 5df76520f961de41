"""Process groups, sharding plans and the DistributedModelParallel wrapper."""
