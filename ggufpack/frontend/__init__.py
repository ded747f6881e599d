"""ggufpack as a BuildKit frontend: LLB building, the LLBBridge gateway client, the frontend image."""
