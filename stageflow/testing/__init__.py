"""Local stand-ins for remote paid APIs, speaking their real wire protocols.

For trying pipelines offline and for tests: nothing here is used by a deployment.
"""
