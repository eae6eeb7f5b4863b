# latentgen: rebuild the figures of Ketha & Ramaswamy (TMLR 2026) from scratch.
#
#   snakemake --cores 8 --resources gpu=2        # the papers' full matrix (config.yaml)
#   snakemake --profile profiles/demo            # offline demo on the embedded digits data
#   snakemake results/fig3.pdf                   # one figure, and only what it needs
#
# --configfile FILE replaces config.yaml entirely (it is not merged into it), so a complete
# experiment file such as profiles/demo/demo.yaml also runs on its own or under another profile.

from snakemake.utils import min_version

min_version("9.0")

if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
wildcard_constraints:
    arch="|".join(sorted({m["arch"] for m in MODELS.values()})),
    dataset="|".join(DATASETS_USED),
    corruption=r"[0-9]+\.[0-9]+",
    run=r"[0-9]+",
    epoch=r"[0-9]+",
    subspaces="corrupted|true",


include: "workflow/rules/data.smk"
include: "workflow/rules/labels.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/probes.smk"
include: "workflow/rules/metrics.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/repair.smk"
include: "workflow/rules/relabel.smk"
include: "workflow/rules/tables.smk"


rule all:
    default_target: True
    input:
        [out(f"{fig}.pdf") for fig in config["figures"]["build"]],
        repair_targets,
        paper2025_targets,
