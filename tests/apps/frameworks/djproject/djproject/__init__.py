"""A small real Django project served by gristmill in tests/test_fw_django.py."""
