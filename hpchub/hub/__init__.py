"""The JupyterHub face, in the hub's process as the hub's account: the spawner (``spawner``,
entry point ``hpchub``) and what it shows (the spawn form ``form``, the texts while a server starts
``progress``, walltime texts and end reasons ``walltime``), the API endpoints where a starting job
reports its port (``porthandler``) and a kernel asks for engines (``engines``), the Share page
(``sharing``), the instructor's class page (``teaching``), the form's start estimates
(``estimate``), their place among JupyterHub's routes (``routes``) and the hub's page templates
(``hub_templates``, ``hpchub.HUB_TEMPLATES``)."""
