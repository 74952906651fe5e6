"""vptbench backbones: a registry of video pose transformers and the hourglass token plug-ins."""
from .registry import (backbone_config, backbone_pipelines, create, is_backbone, list_backbones, list_presets,
                       register_backbone)
from . import mhformer, mixste, motionagformer, motionbert, poseformer  # noqa: F401  (registers the families)
from .hourglass import Hourglass, Schedule, build_hourglass, create_hourglass, list_pruners, list_recoverers
from .pretrained import load_pretrained

__all__ = ["backbone_config", "backbone_pipelines", "list_presets", "create", "is_backbone", "list_backbones", "register_backbone", "Hourglass", "Schedule",
           "build_hourglass", "create_hourglass", "list_pruners", "list_recoverers", "load_pretrained"]
