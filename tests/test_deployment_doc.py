"""docs/deployment.md's Kubernetes Deployment holds together: it parses, and the grace
period covers the preStop sleep plus gristmill's graceful timeout. (Its nginx and
HAProxy configurations are run by ``test_edge_nginx.py`` and ``test_edge_haproxy.py``.)
"""

from __future__ import annotations

import yaml

from _proxy import docs_config


def test_kubernetes_grace_period_covers_the_drain():
    deployment = yaml.safe_load(docs_config("kubernetes"))
    pod = deployment["spec"]["template"]
    spec = pod["spec"]
    (container,) = spec["containers"]
    args = container["command"]
    graceful = next(float(a.split("=", 1)[1]) for a in args if a.startswith("--graceful-timeout="))
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert spec["terminationGracePeriodSeconds"] >= pre_stop + graceful + 1
    # Prometheus scrapes the --metrics-bind port, not the application's.
    metrics_port = next(a.rsplit(":", 1)[1] for a in args if a.startswith("--metrics-bind="))
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == metrics_port
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["metrics"] == int(metrics_port)
    assert container["readinessProbe"]["httpGet"]["port"] == "http"
