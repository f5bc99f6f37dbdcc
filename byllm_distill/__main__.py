from byllm_distill.cli import main

main(prog_name="byllm-distill")
