from ssfcli.main import main

main()
