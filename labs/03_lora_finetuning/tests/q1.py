OK_FORMAT = True

test = {   'name': 'q1',
    'points': 2,
    'suites': [   {   'cases': [   {   'code': ">>> assert lora_params is not ..., 'not done yet: set lora_params'\n"
                                               ">>> assert isinstance(lora_params, int) and lora_params > 0, 'a whole number of parameters'\n",
                                       'hidden': False,
                                       'locked': False}],
                      'scored': True,
                      'setup': '',
                      'teardown': '',
                      'type': 'doctest'}]}
