"""Models: DLRM (embedding bags + MLPs)."""
