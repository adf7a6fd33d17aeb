OK_FORMAT = True

test = {   'name': 'q1',
    'points': 2,
    'suites': [   {   'cases': [   {   'code': ">>> assert predicted_gb is not ..., 'not done yet: set predicted_gb'\n"
                                               ">>> assert isinstance(predicted_gb, float) and 1 < predicted_gb < 100, 'a number of GB'\n",
                                       'hidden': False,
                                       'locked': False}],
                      'scored': True,
                      'setup': '',
                      'teardown': '',
                      'type': 'doctest'}]}
