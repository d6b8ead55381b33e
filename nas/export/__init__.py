"""What leaves a search: model configs (``best.yaml``, ``nas-export``), checkpoints, the timm export.

Public: ``model_config`` (``export_from_run``, ``save_model_config``, ``load_model_config``, ``read_checkpoint``),
``timm`` (``export_timm``) and ``timm_model`` (``register``). docs/api.md lists the names.
"""
