from tokenbench.cli import main

main()
