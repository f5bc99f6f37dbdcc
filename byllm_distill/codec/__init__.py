"""What a site's student reads and writes, shared by training (which mines it from the
records) and the runtime (which serves with it).

Modules: `site` (`SiteCodec`: compact prompts and targets, the way back, the constraints
mined from training outputs), `inputs` (`InputPolicy`: which arguments the student reads,
and the prompt budget), `grammar` (the per-call GBNF grammar of a tuple codec), `schema`
(target key order and the limits that bound a JSON-schema grammar) and `paths` (paths into
arguments and schemas). The codec is stored in each version's manifest, so a version is
served with exactly the codec it was trained with. Nothing here imports torch or llama_cpp.
"""
