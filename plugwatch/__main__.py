from plugwatch.cli import main

main()
