import FedGateCLI

FedGateCommand.main()
