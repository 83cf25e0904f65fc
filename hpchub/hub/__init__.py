"""The JupyterHub face, in the hub's process as the hub's account: the spawner (``spawner``,
entry point ``hpchub``) and what it shows (the spawn form ``form``, the texts while a server starts
``progress``, walltime texts and end reasons ``walltime``), the API endpoint where a starting job
reports its port (``porthandler``) and the hub's page templates (``hub_templates``,
``hpchub.HUB_TEMPLATES``)."""
