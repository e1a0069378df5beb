"""The stage in front of the step runner: a typed request made into token sequences.

For a conversation: the tool plan, the grammar for a forced call or an output constraint,
the model's chat template and its tokenizer; for a prompt: its tokens (or a fill-in-the-middle
prompt for ``suffix``). Then the limits and the sampling settings of each sequence. All of it
is CPU work, run in the engine's worker pool; nothing here submits.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from inferflux_core.contracts import SamplingParams, StepBackend
from inferflux_core.contracts.generation import InferenceRequest, OutputConstraint
from inferflux_core.engine.chat_prompt import check_continuation, render_conversation
from inferflux_core.engine.infill import infill_tokens
from inferflux_core.engine.model import LoadedModel
from inferflux_core.engine.requests import GenerationRequest, new_request_id
from inferflux_core.engine.sampling_defaults import apply_sampling_defaults
from inferflux_core.engine.turns import first_turn_tokens
from inferflux_core.errors import InvalidRequestError
from inferflux_core.structured import check_backend_grammar, constraint_grammar
from inferflux_core.structured.guidance import (
    check_backend_guidance,
    constraint_guidance,
    schema_param,
)
from inferflux_core.structured.response_format import check_ends_when_complete
from inferflux_core.tools import NO_TOOLS, ToolPlan, plan_tools, template_family

SEED_MASK = (1 << 64) - 1
#: Odd 64-bit constant (the golden ratio's): choice seeds far apart for nearby request seeds.
SEED_STRIDE = 0x9E3779B97F4A7C15


@dataclass(frozen=True, slots=True)
class Prepared:
    """A request ready to submit: ``candidates`` sequences of one prompt, of which the ``n``
    likeliest are returned when ``candidates > n`` (``best_of``)."""

    model: LoadedModel
    sequences: tuple[GenerationRequest, ...]
    n: int
    plan: ToolPlan
    echo: tuple[int, ...]
    keep_logprobs: bool

    @property
    def ranks(self) -> bool:
        """Whether candidates are ranked (``best_of > n``)."""
        return len(self.sequences) > self.n

    @property
    def worst_case(self) -> int:
        """The most tokens the request can use: its prompt once, and every sequence's
        ``max_tokens`` (what a rate limiter reserves before it is submitted)."""
        first = self.sequences[0]
        return len(first.prompt_tokens) + first.max_tokens * len(self.sequences)


def prepare(model: LoadedModel, request: InferenceRequest) -> Prepared:
    """The sequences for ``request`` on ``model``; 400 naming the problem."""
    backend = model.backend
    options = apply_sampling_defaults(request.options, model.sampling_defaults)
    if options.logprobs is not None and not backend.supports_logprobs:
        raise InvalidRequestError(
            f"logprobs: the backend of model {model.name!r} cannot report token logprobs",
            param="logprobs",
            code="unsupported",
        )
    plan = NO_TOOLS
    first_turn: int | None = None
    if request.messages is not None:
        template = model.template
        native = template is not None and template.uses_tools
        family = template_family(template.source if native and template is not None else None)
        llguidance = backend if backend.supports_llguidance else None
        plan = plan_tools(request, backend, family, guidance=llguidance)
        check_continuation(request, forced_call=plan.mode == "forced")
        tokens = model.tokenize_prompt(render(model, request, plan))
        if backend.kv_rows_by_chunk_class:
            first_turn = first_turn_tokens(model, request, plan, tokens)
    else:
        tokens = prompt_tokens(model, request)
    grammar, guidance = plan.grammar, plan.guidance
    if grammar is None and guidance is None:
        grammar, guidance = _constraint(request.constraint, backend, request)
    n = options.n
    candidates = max(n, options.best_of or n)
    # Ranking best_of candidates needs their logprobs even when the client asks for none.
    logprobs = options.logprobs
    if logprobs is None and candidates > n:
        logprobs = 0
    room = backend.info.context_length - len(tokens)
    limit = model.config.max_tokens_limit
    max_tokens = min(options.max_tokens or limit, limit, max(room, 1))
    sampling = SamplingParams(
        temperature=options.temperature,
        top_p=options.top_p,
        top_k=options.top_k,
        min_p=options.min_p,
        seed=options.seed,
        repeat_penalty=options.repeat_penalty,
        presence_penalty=options.presence_penalty,
        frequency_penalty=options.frequency_penalty,
        grammar=grammar,
        llguidance=guidance,
        logit_bias=_logit_bias(model, options.logit_bias),
        logprobs=logprobs,
    )
    first = GenerationRequest(
        prompt_tokens=tokens,
        max_tokens=max_tokens,
        sampling=sampling,
        stop=options.stop,
        ignore_eos=options.ignore_eos,
        min_tokens=options.min_tokens,
        priority=request.priority,
        speculative=options.speculative,
        request_id=request.request_id,
        first_turn_tokens=first_turn,
    )
    sequences = [first] + [
        dataclasses.replace(
            first,
            sampling=dataclasses.replace(sampling, seed=derive_seed(options.seed, i)),
            request_id=new_request_id(request.request_id.split("-", 1)[0]),
        )
        for i in range(1, candidates)
    ]
    echo = tuple(tokens) if options.echo else ()
    return Prepared(model, tuple(sequences), n, plan, echo, options.logprobs is not None)


def render(model: LoadedModel, request: InferenceRequest, plan: ToolPlan) -> str:
    """The prompt for a conversation: its messages and the plan's tools, rendered."""
    return render_conversation(
        model,
        request.messages or (),
        plan.offered,
        continue_final=request.continue_final_message,
    )


def prompt_tokens(model: LoadedModel, request: InferenceRequest) -> list[int]:
    """A raw prompt's tokens, or the fill-in-the-middle prompt when there is a ``suffix``."""
    prompt = request.prompt if request.prompt is not None else ""
    if isinstance(prompt, tuple):
        check_token_ids(model, prompt, "prompt")
    if request.suffix:
        return infill_tokens(
            model, prompt if isinstance(prompt, str) else list(prompt), request.suffix
        )
    return model.tokenize_prompt(prompt) if isinstance(prompt, str) else list(prompt)


def check_token_ids(model: LoadedModel, tokens: tuple[int, ...] | list[int], param: str) -> None:
    """400 if a token id is outside the model's vocabulary."""
    vocab = model.backend.info.vocab_size
    for token in tokens:
        if not 0 <= token < vocab:
            raise InvalidRequestError(
                f"{param}: token id {token} is outside the vocabulary (0..{vocab - 1})",
                param=param,
            )


def derive_seed(seed: int | None, index: int) -> int | None:
    """Choice ``index``'s seed: the request's for the first, distinct reproducible ones after."""
    if seed is None or index == 0:
        return seed
    return (seed + index * SEED_STRIDE) & SEED_MASK


def _constraint(
    constraint: OutputConstraint | None, backend: StepBackend, request: InferenceRequest
) -> tuple[str | None, str | None]:
    """``(gbnf, llguidance)``: the grammar enforcing ``constraint``, at most one of them.

    A JSON constraint goes to llguidance when the backend runs it (``supports_llguidance``);
    a GBNF ``grammar`` constraint, and every constraint on other backends, stays GBNF.
    """
    if constraint is None:
        return None, None
    options = request.options
    if constraint.kind != "grammar" and backend.supports_llguidance:
        check_ends_when_complete(
            constraint.param, ignore_eos=options.ignore_eos, min_tokens=options.min_tokens
        )
        guidance = constraint_guidance(constraint)
        check_backend_guidance(backend, guidance, schema_param(constraint))
        return None, guidance
    grammar = constraint_grammar(
        constraint, ignore_eos=options.ignore_eos, min_tokens=options.min_tokens
    )
    check_backend_grammar(backend, grammar, constraint.param)
    return grammar, None


def _logit_bias(model: LoadedModel, bias: Mapping[int, float] | None) -> dict[int, float] | None:
    if not bias:
        return None
    out = dict(bias)
    check_token_ids(model, list(out), "logit_bias")
    return out
