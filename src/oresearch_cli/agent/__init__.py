"""The multi-agent workflow that synthesizes traces: planner -> parallel workers -> summarizer.

    from oresearch_cli.agent import ResearchOptions, research

    result = await research(question, "en", llm, toolbox, ResearchOptions(max_steps=10))
    result.text, result.problems, result.usage.prompt_tokens, result.failures, result.steps

Modules: `prompts` (prompt text files per language), `pieces` (schemas and lenient parsing of
what each role writes), `sources` (numbered sources), `context` (options, meter, `ask` with one
strict retry), `steps` (one record per step: its trace step and its log entry), `planner`,
`worker`, `summarizer`, `workflow` (`research`).
"""

from oresearch_cli.agent.context import Failure, Meter, ResearchOptions
from oresearch_cli.agent.prompts import prompt_language, prompts_version
from oresearch_cli.agent.workflow import ResearchResult, research

__all__ = [
    "Failure",
    "Meter",
    "ResearchOptions",
    "ResearchResult",
    "prompt_language",
    "prompts_version",
    "research",
]
