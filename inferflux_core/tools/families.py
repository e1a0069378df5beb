"""Tool-call syntaxes of the chat-template families llama.cpp's server recognises, and how a
template's family is told from its source (marker strings, as llama.cpp's ``chat.cpp`` does).

``hermes`` (``<tool_call>{json}</tool_call>``) is the fallback: it is what the fallback prompt
teaches and what the forced-call grammar writes, and it is parsed by
:class:`~inferflux_core.tools.parser.ToolCallParser`. Every other family is a
:class:`~inferflux_core.tools.family_parser.Syntax` for
:class:`~inferflux_core.tools.family_parser.FamilyParser`.
"""

from __future__ import annotations

import functools
import re

from inferflux_core.tools.family_parser import QWEN_XML, Block, Form, Markup, Syntax, XmlArguments
from inferflux_core.tools.gemma import gemma_call
from inferflux_core.tools.pythonic import builtin_call, python_calls

NAME = r"([a-zA-Z0-9_-]{1,64})"
#: A JSON call's head up to its arguments: ``{"name": "f", "arguments": `` (or ``parameters``).
JSON_HEAD = (
    r'\{\s*(?:"type"\s*:\s*"function"\s*,\s*)?"name"\s*:\s*"'
    + NAME
    + r'"\s*,\s*"(?:arguments|parameters)"\s*:\s*(?=\{)'
)
ARGS = r"\s*(?=\{)"


def _re(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.DOTALL)


def _drop(pattern: str = "", *, hide: bool = False) -> Markup:
    return Markup(_re(pattern), hide=hide)


HERMES = "hermes"

LLAMA3 = Syntax(
    "llama3",
    markers={
        "<|python_tag|>": (
            Form(_re(r"\s*" + JSON_HEAD), _re(r"\s*\}")),
            # A built-in tool (brave_search, wolfram_alpha): ``tool.call(query="...")``.
            Block(
                _re(r"\s*[a-zA-Z_][a-zA-Z0-9_]{0,63}\.call\("),
                "<|eom_id|>",
                builtin_call,
                open_ended=True,
            ),
        )
    },
    start=(Form(_re(r"\s*" + JSON_HEAD), _re(r"\s*\}"), viable=_re(r"\s*(?:\{.*)?")),),
)

MISTRAL = Syntax(
    "mistral",
    markers={
        "[TOOL_CALLS]": (
            # Mistral Nemo: a JSON array of {"name", "arguments", "id"}.
            Form(
                _re(r"\s*[\[,]\s*" + JSON_HEAD),
                _re(r'\s*(?:,\s*"id"\s*:\s*"[^"]{0,64}"\s*)?\}'),
                close=_re(r"\s*\]"),
            ),
            # Mistral Small 3.2, Devstral, Ministral 3: name[CALL_ID]id[ARGS]{...}
            Form(_re(r"\s*" + NAME + r"(?:\[CALL_ID\][a-zA-Z0-9_-]{1,64})?\[ARGS\]" + ARGS)),
        ),
    },
)


def _json_array(name: str, opening: str, closing: str = "") -> Syntax:
    """A family writing its calls as ``opening[{"name": ..., "arguments": {...}}, ...]closing``."""
    close = _re(r"\s*\]" + (r"\s*" + re.escape(closing) if closing else ""))
    # ``viable``: "functools" in plain text is given back at once, not after HEAD_LIMIT.
    viable = _re(r"\s*(?:[\[,].*)?")
    form = Form(_re(r"\s*[\[,]\s*" + JSON_HEAD), _re(r"\s*\}"), close=close, viable=viable)
    return Syntax(name, markers={opening: (form,)})


#: Granite 3.x, FireFunction v2, Nemotron Nano v2, Apriel 1.5: a JSON array after a marker.
GRANITE = _json_array("granite", "<|tool_call|>")
FIREFUNCTION = _json_array("firefunction_v2", "functools")
NEMOTRON_V2 = _json_array("nemotron_v2", "<TOOLCALL>", "</TOOLCALL>")
APRIEL = _json_array("apriel", "<tool_calls>", "</tool_calls>")

QWEN3_CODER = Syntax(
    "qwen3_coder",
    markers={
        "<tool_call>": (
            Form(_re(r"\s*<function=" + NAME + r">"), _re(r"\s*</tool_call>"), xml=QWEN_XML),
            Form(_re(r"\s*" + JSON_HEAD), _re(r"\s*\}\s*</tool_call>")),
        ),
    },
)

SEED_OSS = Syntax(
    "seed_oss",
    markers={
        "<seed:tool_call>": (
            Form(_re(r"\s*<function=" + NAME + r">"), _re(r"\s*</seed:tool_call>"), xml=QWEN_XML),
        ),
    },
)


GLM = Syntax(
    "glm",
    markers={
        "<tool_call>": (
            Form(
                _re(r"\s*" + NAME + r"(?=\s*(?:<arg_key>|</tool_call>))"),
                xml=XmlArguments(
                    _re(
                        r"\s*<arg_key>(?P<key>[^<\n]{1,64})</arg_key>\s*<arg_value>(?P<value>.*?)</arg_value>"
                    ),
                    "<arg_key>",
                    "</arg_value>",
                    "</tool_call>",
                ),
            ),
        ),
    },
)


def _invoke(prefix: str, section: str) -> Form:
    """MiniMax-M2 and DeepSeek V3.2's ``<invoke name="f"><parameter name="k">v</parameter>
    </invoke>`` calls, their tags opening with ``prefix``, in a ``section`` element."""
    return Form(
        _re(r"\s*<" + prefix + r'invoke name="' + NAME + r'">'),
        close=_re(r"\s*</" + prefix + section + ">"),
        xml=XmlArguments(
            _re(
                r"\s*<"
                + prefix
                + r'parameter name="(?P<key>[^"\n]{1,64})"(?: string="(?P<string>true|false)")?>'
                + r"(?P<value>.*?)</"
                + prefix
                + "parameter>"
            ),
            "<" + prefix + "parameter name=",
            "</" + prefix + "parameter>",
            "</" + prefix + "invoke>",
        ),
    )


MINIMAX_M2 = Syntax(
    "minimax_m2", markers={"<minimax:tool_call>": (_invoke("", "minimax:tool_call"),)}
)

#: DeepSeek V3.2 (``function_calls``) and V4 (``tool_calls``): DSML markup.
DSML = "\uff5cDSML\uff5c"
DEEPSEEK_V3_2 = Syntax(
    "deepseek_v3_2",
    markers={
        f"<{DSML}{section}>": (_invoke(re.escape(DSML), section),)
        for section in ("function_calls", "tool_calls")
    },
)

LFM2 = Syntax(
    "lfm2",
    markers={"<|tool_call_start|>": (Block(_re(r"\s*\["), "<|tool_call_end|>", python_calls),)},
)


#: Gemma 4: ``<|tool_call>call:f{k:<|"|>v<|"|>}<tool_call|>``; ``<|channel>`` thoughts hidden.
GEMMA4 = Syntax(
    "gemma4",
    markers={
        "<|tool_call>": (Block(_re(r"call:"), "<tool_call|>", gemma_call),),
        "<|channel>": (_drop(hide=True),),
        "<channel|>": (_drop(),),
    },
)


def deepseek_token(name: str) -> str:
    """A DeepSeek special token: ``name`` between full-width bars (U+FF5C), its spaces as U+2581."""
    return "<\uff5c" + name.replace(" ", "\u2581") + "\uff5c>"


DS_CALLS_BEGIN = deepseek_token("tool calls begin")
_DS_CALL = "(?:" + deepseek_token("tool call begin") + ")?"
_DS_SEP = deepseek_token("tool sep")
_DS_CALL_END = deepseek_token("tool call end")
_DS_CALLS_END = _re(r"\s*" + deepseek_token("tool calls end"))
DEEPSEEK = Syntax(
    "deepseek",
    markers={
        DS_CALLS_BEGIN: (
            # R1: [call begin]function[sep]name, a json fence, [call end]
            Form(
                _re(r"\s*" + _DS_CALL + "function" + _DS_SEP + NAME + r"\s*```(?:json)?" + ARGS),
                _re(r"\s*```\s*" + _DS_CALL_END),
                close=_DS_CALLS_END,
            ),
            # V3.1: [call begin]name[sep]{...}[call end]
            Form(
                _re(r"\s*" + _DS_CALL + NAME + _DS_SEP + ARGS),
                _re(r"\s*" + _DS_CALL_END),
                close=_DS_CALLS_END,
            ),
        )
    },
)

COMMAND_R = Syntax(
    "command_r7b",
    markers={
        "<|START_ACTION|>": (
            Form(
                _re(
                    r'\s*[\[,]\s*\{\s*"tool_call_id"\s*:\s*"[^"]{0,64}"\s*,\s*"tool_name"\s*:\s*"'
                    + NAME
                    + r'"\s*,\s*"parameters"\s*:\s*(?=\{)'
                ),
                _re(r"\s*\}"),
                close=_re(r"\s*\]\s*<\|END_ACTION\|>"),
            ),
        ),
        "<|START_THINKING|>": (_drop(hide=True),),
        "<|END_THINKING|>": (_drop(),),
        "<|START_RESPONSE|>": (_drop(),),
        "<|END_RESPONSE|>": (_drop(),),
    },
)

#: Command R+ (its tool-use template): ``Action: ```json [{"tool_name": ..., "parameters": ...}]```.
COMMAND_R_PLUS = Syntax(
    "command_r_plus",
    markers={
        "Action:": (
            Form(
                _re(
                    r'\s*(?:```(?:json)?\s*\[|,)\s*\{\s*"tool_name"\s*:\s*"'
                    + NAME
                    + r'"\s*,\s*"parameters"\s*:\s*(?=\{)'
                ),
                _re(r"\s*\}"),
                close=_re(r"\s*\]\s*```"),
            ),
        ),
    },
)

FUNCTIONARY_V3_2 = Syntax(
    "functionary_v3_2",
    markers={
        ">>>": (_drop(r"all\n"), Form(_re(NAME + r"\n" + ARGS))),
    },
    start=(
        Markup(_re(r"all\n"), viable=_re(r"(?:a|al|all)?")),
        Form(_re(NAME + r"\n" + ARGS), viable=_re(r"[a-zA-Z0-9_-]{0,64}(?:\n\s*(?:\{.*)?)?")),
    ),
)

FUNCTIONARY_V3_1 = Syntax(
    "functionary_v3_1_llama3_1",
    markers={
        "<function=": (Form(_re(NAME + r">" + ARGS), _re(r"\s*</function>")),),
        "<|python_tag|>": (Form(_re(r"\s*" + JSON_HEAD), _re(r"\s*\}")),),
    },
)

KIMI_K2 = Syntax(
    "kimi_k2",
    markers={
        "<|tool_calls_section_begin|>": (
            Form(
                _re(
                    r"\s*<\|tool_call_begin\|>\s*(?:functions\.)?"
                    + NAME
                    + r"(?::\d{1,6})?\s*<\|tool_call_argument_begin\|>"
                    + ARGS
                ),
                _re(r"\s*<\|tool_call_end\|>"),
                close=_re(r"\s*<\|tool_calls_section_end\|>"),
            ),
        ),
    },
)

_CONSTRAIN = r"\s*(?:<\|constrain\|>\s*)?(?:json\s*)?<\|message\|>"
GPT_OSS = Syntax(
    "gpt_oss",
    markers={
        "<|channel|>": (
            Form(
                _re(r"commentary\s+to=functions\." + NAME + _CONSTRAIN + ARGS),
                _re(r"(?:\s*<\|call\|>)?"),
            ),
            _drop(r"analysis<\|message\|>", hide=True),
            _drop(r"(?:final|commentary)<\|message\|>"),
        ),
        "<|start|>": (
            Form(
                _re(
                    r"assistant\s*to=functions\."
                    + NAME
                    + r"\s*<\|channel\|>commentary"
                    + _CONSTRAIN
                    + ARGS
                ),
                _re(r"(?:\s*<\|call\|>)?"),
            ),
            _drop(r"assistant(?=<\|channel\|>)"),
        ),
        "<|end|>": (_drop(),),
        "<|return|>": (_drop(),),
        "<|call|>": (_drop(),),
    },
)

SYNTAXES = {
    s.name: s
    for s in (
        LLAMA3,
        MISTRAL,
        GRANITE,
        FIREFUNCTION,
        NEMOTRON_V2,
        APRIEL,
        QWEN3_CODER,
        SEED_OSS,
        DEEPSEEK,
        COMMAND_R,
        COMMAND_R_PLUS,
        FUNCTIONARY_V3_2,
        FUNCTIONARY_V3_1,
        KIMI_K2,
        GPT_OSS,
        GLM,
        MINIMAX_M2,
        DEEPSEEK_V3_2,
        LFM2,
        GEMMA4,
    )
}
FAMILIES = (HERMES, *SYNTAXES)

#: (family, markers all of which the template source holds), first match wins: the more
#: specific families first, as in llama.cpp's ``common_chat_templates_apply_jinja``.
DETECTION: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("deepseek", (DS_CALLS_BEGIN,)),
    ("deepseek_v3_2", ("dsml_token", "DSML")),
    ("gemma4", ("<|tool_call>call:",)),
    ("minimax_m2", ("<minimax:tool_call>",)),
    ("lfm2", ("<|tool_list_start|>", "<|tool_list_end|>")),
    ("lfm2", ("List of tools: [",)),
    ("command_r7b", ("<|START_ACTION|>",)),
    ("command_r_plus", ("directly-answer", "Action:")),
    ("gpt_oss", ("<|channel|>",)),
    ("seed_oss", ("<seed:tool_call>",)),
    ("kimi_k2", ("<|tool_calls_section_begin|>",)),
    ("qwen3_coder", ("<tool_call>", "<function=", "<parameter=")),
    ("glm", ("<tool_call>", "<arg_key>")),
    ("functionary_v3_2", (">>>all",)),
    ("functionary_v3_1_llama3_1", ("<function=", "<|python_tag|>")),
    ("mistral", ("[TOOL_CALLS]",)),
    ("granite", ("<|tool_call|>", "<|start_of_role|>")),
    ("firefunction_v2", ("functools[",)),
    ("nemotron_v2", ("<TOOLCALL>[",)),
    ("apriel", ("<tool_calls>[",)),
    ("hermes", ("<tool_call>",)),
    ("llama3", ("<|start_header_id|>ipython<|end_header_id|>",)),
    ("llama3", ("<|python_tag|>",)),
)


@functools.lru_cache(maxsize=32)
def detect_family(source: str) -> str:
    """The tool-call family of a chat template, from its source; ``hermes`` when no marker
    of another family is in it."""
    for family, markers in DETECTION:
        if all(marker in source for marker in markers):
            return family
    if '"parameters"' in source and "<|start_header_id|>" in source:
        return "llama3"
    return HERMES
