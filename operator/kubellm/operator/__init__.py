"""kubellm operator: reconciles the kubellm custom resources into Kubernetes objects."""
