from godwit.cli.main import main

main()
