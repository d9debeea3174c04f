from lmtool.cli import main

main()
