"""The paper's tables and figures, assembled from MLflow runs."""
