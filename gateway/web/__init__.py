# The gateway's status page for technicians: a read-only web page, a JSON API and
# Prometheus metrics, fed from a status snapshot function and a bounded history.
