"""The core every face of hpchub shares (the spawner, the admin commands, the ipyparallel
launcher): the site config (``config``, read with ``yamlfile``, sizes and times in ``units``), a
user's choices (``options``), every job built in one place (``jobs`` with ``render``), a job's life
on the hub side (``lifecycle``), one status query per cluster for all servers (``poller``), the
per-process registry of clients and pollers (``runtime``), the hub user -> unix account map
(``accounts``) and the Prometheus series all of these count into (``metrics``). It runs in the
hub's process, or in an admin's or a notebook's; never inside a job."""
