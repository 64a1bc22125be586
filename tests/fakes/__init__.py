"""In-process fakes of external services (storage microservices) for tests."""
