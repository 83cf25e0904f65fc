"""How hpchub's commands reach a cluster, in the hub's process: the one command runner
(``runner``), a cluster's client with its transport (``cluster``: as the hub, or as a user through
``sudo -n -u USER`` or directly), the SSH pool to a login node (``sshpool``) and the files that carry
internal_ssl to a job (``tls``). What is said to the scheduler is in hpchub/schedulers/."""
