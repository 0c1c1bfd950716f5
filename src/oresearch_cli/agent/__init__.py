"""The multi-agent workflow that synthesizes traces: planner -> parallel workers -> summarizer.

    from oresearch_cli.agent import ResearchOptions, research

    result = await research(question, "en", llm, toolbox, ResearchOptions(max_steps=10))
    result.text, result.problems, result.usage.prompt_tokens, result.failures, result.steps

Modules: `prompts` (prompt text files per language), `pieces` (schemas and lenient parsing of
what each role writes), `sources` (numbered sources), `context` (options, meter, `ask` with one
strict retry), `steps` (one record per step: its trace step and its log entry), `planner`,
`worker`, `summarizer`, `workflow` (`research`).

The single-model research loop (one trained model writes the whole trace) is `single.research`,
on a generator from `generators` (an endpoint, or an in-process engine); `protocol` is its prompt:

    from oresearch_cli.agent.single import research as research_alone

    episode = await research_alone(question, EngineGenerator(engine), tools, budget=LoopBudget())

Nothing here imports torch: `load_engine_generator` does, when called.
"""

from oresearch_cli.agent.context import Failure, Meter, ResearchOptions
from oresearch_cli.agent.generators import (
    ChatTokenizer,
    EndpointGenerator,
    EngineGenerator,
    Generation,
    Generator,
    GeneratorError,
    load_engine_generator,
)
from oresearch_cli.agent.prompts import prompt_language, prompts_version
from oresearch_cli.agent.single import Episode, LoopBudget, Span
from oresearch_cli.agent.workflow import ResearchResult, research

__all__ = [
    "ChatTokenizer",
    "EndpointGenerator",
    "EngineGenerator",
    "Episode",
    "Failure",
    "Generation",
    "Generator",
    "GeneratorError",
    "LoopBudget",
    "Meter",
    "ResearchOptions",
    "ResearchResult",
    "Span",
    "load_engine_generator",
    "prompt_language",
    "prompts_version",
    "research",
]
