"""What the server tells its operators about itself: Prometheus metrics.

`metrics` owns every metric family and the multiprocess plumbing, `routes` turns a request
path into a low-cardinality route template, `middleware` counts, names (`requestid`) and
audits (`audit`) every request of the main port at one point, `ports` does the same for
the blob port and `metrics_listen`, `endpoint` serves `/metrics` (authorized like
kube-apiserver's), and `sources` attaches the counters that need a collaborator: the
authorizer, the blob store, the database engine and the periodic totals. A later refactor
of the request pipelines only has to keep calling `MetricsMiddleware` and `PortObserver`.
"""
