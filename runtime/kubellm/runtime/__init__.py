"""kubellm runtime: the one image that trains, serves and evaluates."""
