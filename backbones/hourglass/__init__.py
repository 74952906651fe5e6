"""Token pruning / recovery plug-ins and the hourglass wrapper, written once for every backbone."""
from .model import PIPELINES, Hourglass, StageTrace, build_hourglass, check_hourglass, compatible_recoverers, create_hourglass
from .pruning import PRUNERS, KeepPruner, PruneContext, Pruner, ScorePruner
from .recovery import RECOVERERS, Recoverer
from .strategy import BuildContext, TokenState
from .schedule import Schedule, Stage, parse_schedule
from .tokens import gather_frames


def list_pruners():
    return PRUNERS.names()


def list_recoverers():
    return RECOVERERS.names()


__all__ = ["Hourglass", "StageTrace", "build_hourglass", "check_hourglass", "compatible_recoverers", "create_hourglass",
           "gather_frames", "PIPELINES", "PRUNERS", "RECOVERERS", "Pruner", "KeepPruner", "ScorePruner", "Recoverer",
           "PruneContext", "BuildContext", "TokenState", "Schedule", "Stage", "parse_schedule", "list_pruners",
           "list_recoverers"]
