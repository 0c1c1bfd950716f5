from oresearch_cli.cli import main

main()
