"""Evaluation: IFEval with the official checks, judge accuracy, inference-time scaling.

    from spar_jax.eval import chat, ifeval, judge_accuracy, scaling

    examples = ifeval.load_inputs()                       # the 541 bundled IFEval prompts
    answers = chat.greedy_answers(model, [e.prompt for e in examples], max_new_tokens=1280)
    report = ifeval.score(examples, dict(zip([e.prompt for e in examples], answers)))
    report.metrics                                         # lm-eval's four metric names

    judge_accuracy.judge_accuracy(refiner, labelled_rows, votes=(1, 3, 5))
    scaling.compare(rows, scaling.ifeval_scorer, actor, refiner, scaling.ScalingConfig())

`model`, `refiner` and `actor` are `spar.generator.ChatGenerator`s (a loaded
`ChatModel`: `chat.load_chat(dir)`). The commands are `python -m spar_jax eval
ifeval | judge | scaling` (spar_jax/cli/eval.py). The IFEval checks need NLTK's
punkt_tab data (see `ifeval_text`).
"""
