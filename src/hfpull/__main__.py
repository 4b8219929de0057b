from hfpull.cli import main

main()
