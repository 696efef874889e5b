"""Tests of service/api: the resources and the rules every route keeps."""
