"""Token pruning / recovery plug-ins and the hourglass wrapper, written once for every backbone."""
from .model import PIPELINES, Hourglass, build_hourglass, check_hourglass, create_hourglass
from .pruning import PRUNERS, PruneContext
from .recovery import RECOVERERS
from .schedule import Schedule, Stage, parse_schedule
from .tokens import gather_frames


def list_pruners():
    return PRUNERS.names()


def list_recoverers():
    return RECOVERERS.names()


__all__ = ["Hourglass", "build_hourglass", "check_hourglass", "create_hourglass", "gather_frames", "PIPELINES", "PRUNERS", "RECOVERERS", "PruneContext", "Schedule",
           "Stage", "parse_schedule", "list_pruners", "list_recoverers"]
