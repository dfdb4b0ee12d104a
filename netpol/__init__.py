"""netpol: Kubernetes NetworkPolicy compiler."""
