from mambaseq.cli import main

main()
